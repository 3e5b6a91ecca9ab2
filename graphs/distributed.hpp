// Compiled as part of engine.cpp, not on its own (see there).
// Data-parallel training on libtorch's c10d: a Gloo process group that
// meets through a TCP store (torchrun's convention) or a file store (the
// one-machine launcher). Collectives run on the calling thread, in the same
// order on every rank. When one fails, this rank tears its group down, so
// that its peers fail now rather than at their timeout, and the error names
// the ranks that stopped answering.
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "engine.h"

struct ds_group {
  int rank = 0;
  int world = 1;
  bool rank0_serves_store = false;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;  // null once it failed
  std::string failure;
  double seconds = 0;  // in the training steps' all-reduces
  int64_t calls = 0;
};

namespace deepsim {
namespace {

using Clock = std::chrono::steady_clock;

// How long a rank that saw a collective fail waits for the others to
// answer the roll call before it names them lost.
constexpr auto kRollCall = std::chrono::seconds(3);
// Gradients travel in flat buckets of at most this size, DDP's default.
constexpr int64_t kBucketBytes = int64_t{25} << 20;

std::string message(const std::exception& e) {
  const auto* c = dynamic_cast<const c10::Error*>(&e);
  std::string s = c ? c->what_without_backtrace() : e.what();
  return s.substr(0, s.find('\n'));
}

std::string ranks(const std::vector<int>& rs) {
  std::string s = rs.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < rs.size(); i++) s += (i ? ", " : "") + std::to_string(rs[i]);
  return s;
}

std::string key(const char* what, int rank) { return std::string(what) + "/" + std::to_string(rank); }

// The ranks that have not set what/RANK in the store.
std::vector<int> missing(ds_group& g, const char* what) {
  std::vector<int> out;
  for (int r = 0; r < g.world; r++)
    if (r != g.rank && !g.store->check({key(what, r)})) out.push_back(r);
  return out;
}

// Every rank that saw a collective fail answers in the store; the ranks
// that do not answer within kRollCall are the lost ones.
std::string roll_call(ds_group& g) {
  try {
    g.store->set(key("rollcall", g.rank), {1});
    const auto deadline = Clock::now() + kRollCall;
    auto silent = missing(g, "rollcall");
    while (!silent.empty() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      silent = missing(g, "rollcall");
    }
    if (silent.empty()) return "every rank still runs";
    return "lost " + ranks(silent) + " of " + std::to_string(g.world);
  } catch (const std::exception&) {
    if (g.rank0_serves_store && g.rank != 0)
      return "lost rank 0 of " + std::to_string(g.world) + ", which served the rendezvous store";
    return "the rendezvous store is gone";
  }
}

// Runs f, which issues collectives; a failure breaks the group for good.
template <typename Fn>
void collective(ds_group& g, const std::string& what, Fn&& f) {
  if (!g.pg) throw std::runtime_error("the process group failed earlier: " + g.failure);
  try {
    f();
  } catch (const std::exception& e) {
    const auto cause = message(e);
    g.pg.reset();  // closes this rank's connections: the peers fail now
    g.failure = what + " failed: " + roll_call(g) + " (" + cause + ")";
    throw std::runtime_error(g.failure);
  }
}

// Waits for every work, even after one failed: a process group can only
// be torn down once its queue is empty.
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::exception_ptr first;
  for (auto& w : works) {
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

bool loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const ds_group_spec& spec,
                                                       const std::string& addr) {
  using PG = c10d::ProcessGroupGloo;
  if (spec.ifname && *spec.ifname) return PG::createDeviceForInterface(spec.ifname);
  if (loopback(addr)) return PG::createDeviceForHostname("127.0.0.1");
  return PG::createDefaultDevice();
}

c10::intrusive_ptr<c10d::Store> open_store(const ds_group_spec& spec, const std::string& addr,
                                           std::chrono::milliseconds timeout) {
  if (spec.store_file && *spec.store_file)
    return c10::make_intrusive<c10d::FileStore>(spec.store_file, spec.world_size);
  if (addr.empty()) throw std::invalid_argument("no master address to meet at");
  if (spec.master_port < 1 || spec.master_port > 65535)
    throw std::invalid_argument("port " + std::to_string(spec.master_port) +
                                " is not in 1..65535");
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(spec.master_port);
  o.isServer = spec.host_store && spec.rank == 0;
  o.numWorkers = spec.world_size;
  o.waitWorkers = false;  // missing ranks are named when the group forms
  o.timeout = timeout;
  const std::string where = addr + ":" + std::to_string(spec.master_port);
  try {
    return c10::make_intrusive<c10d::TCPStore>(addr, o);
  } catch (const std::exception& e) {
    throw std::runtime_error(
        (o.isServer ? "rank 0 cannot serve the rendezvous store on port " +
                          std::to_string(spec.master_port)
                    : "cannot reach the rendezvous store at " + where + " within " +
                          std::to_string(timeout.count()) + " ms") +
        ": " + message(e));
  }
}

}  // namespace

ds_group* new_group(const ds_group_spec& spec) {
  if (spec.world_size < 1 || spec.rank < 0 || spec.rank >= spec.world_size)
    throw std::invalid_argument("rank " + std::to_string(spec.rank) + " is not in 0.." +
                                std::to_string(spec.world_size - 1));
  if (spec.timeout_ms <= 0) throw std::invalid_argument("the timeout must be positive");
  const std::chrono::milliseconds timeout(spec.timeout_ms);
  const std::string addr = spec.master_addr ? spec.master_addr : "";
  auto g = std::make_unique<ds_group>();
  g->rank = spec.rank;
  g->world = spec.world_size;
  g->rank0_serves_store = spec.host_store && !(spec.store_file && *spec.store_file);

  auto store = open_store(spec, addr, timeout);
  store->setTimeout(timeout);
  if (spec.store_prefix && *spec.store_prefix)
    store = c10::make_intrusive<c10d::PrefixStore>(spec.store_prefix, store);
  g->store = c10::make_intrusive<c10d::PrefixStore>("deepsim", store);
  g->store->set(key("joined", g->rank), {1});

  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  opts->devices.push_back(gloo_device(spec, addr));
  opts->threads = 2;
  try {
    g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", g->store), g->rank, g->world, opts);
  } catch (const std::exception& e) {
    std::string who;
    try {
      auto absent = missing(*g, "joined");
      if (!absent.empty()) who = ranks(absent) + " never joined; ";
    } catch (const std::exception&) {
    }
    throw std::runtime_error("the process group of " + std::to_string(g->world) +
                             " did not form within " + std::to_string(timeout.count()) +
                             " ms: " + who + message(e));
  }
  return g.release();
}

void free_group(ds_group* g) { delete g; }

int group_rank(const ds_group& g) { return g.rank; }

std::vector<char> broadcast_bytes(ds_group& g, std::vector<char> bytes) {
  collective(g, "the broadcast from rank 0", [&] {
    auto len = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
    std::vector<at::Tensor> t{len};
    g.pg->broadcast(t)->wait();
    const int64_t n = len.item<int64_t>();
    if (n == 0) return;
    auto buf = g.rank == 0 ? torch::from_blob(bytes.data(), {n}, torch::kUInt8)
                           : torch::empty({n}, torch::kUInt8);
    std::vector<at::Tensor> b{buf};
    g.pg->broadcast(b)->wait();
    if (g.rank != 0) {
      const auto* p = reinterpret_cast<const char*>(buf.data_ptr<uint8_t>());
      bytes.assign(p, p + n);
    }
  });
  return bytes;
}

bool group_same(ds_group& g, int64_t value) {
  // The maximum of value and of -value: the largest and the smallest.
  auto t = torch::tensor({value, -value}, torch::kInt64);
  collective(g, "comparing the ranks' values", [&] {
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::MAX;
    g.pg->allreduce(v, o)->wait();
  });
  return t[0].item<int64_t>() == -t[1].item<int64_t>();
}

void allreduce_grads(ds_group& g, const char* what, const std::vector<torch::Tensor>& grads,
                     double scale) {
  const auto start = Clock::now();
  std::vector<std::vector<torch::Tensor>> buckets(1);
  int64_t bytes = 0;
  for (const auto& t : grads) {
    if (!t.defined()) continue;
    if (bytes > 0 && bytes + static_cast<int64_t>(t.nbytes()) > kBucketBytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(t);
    bytes += static_cast<int64_t>(t.nbytes());
  }
  std::vector<torch::Tensor> flat;
  for (const auto& b : buckets) {
    std::vector<torch::Tensor> parts;
    for (const auto& t : b) parts.push_back(t.reshape(-1));
    flat.push_back(parts.empty() ? torch::empty({0}) : torch::cat(parts).mul_(scale));
  }
  collective(g, std::string("the all-reduce of the ") + what, [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& f : flat) {
      if (f.numel() == 0) continue;
      std::vector<at::Tensor> one{f};
      works.push_back(g.pg->allreduce(one));
    }
    wait_all(works);
  });
  for (size_t i = 0; i < buckets.size(); i++) {
    int64_t at = 0;
    for (auto& t : buckets[i]) {
      t.copy_(flat[i].slice(0, at, at + t.numel()).view(t.sizes()));
      at += t.numel();
    }
  }
  g.seconds += std::chrono::duration<double>(Clock::now() - start).count();
  g.calls++;
}

void allreduce_values(ds_group& g, const char* what, std::vector<double>& values,
                      double scale) {
  const auto start = Clock::now();
  auto t = torch::tensor(values, torch::kFloat64).mul_(scale);
  collective(g, std::string("the all-reduce of the ") + what, [&] {
    std::vector<at::Tensor> v{t};
    g.pg->allreduce(v)->wait();
  });
  for (size_t i = 0; i < values.size(); i++) values[i] = t[i].item<double>();
  g.seconds += std::chrono::duration<double>(Clock::now() - start).count();
  g.calls++;
}

void group_stats(const ds_group& g, double* seconds, int64_t* calls) {
  *seconds = g.seconds;
  *calls = g.calls;
}

}  // namespace deepsim
