// Compiled as part of engine.cpp, not on its own (see there).
// State dicts and Adam state in torch.save's zip format: what checkpoints
// and comparator weights are made of.
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "engine.h"

namespace deepsim {

namespace {

// A tensor's view must lie within its storage: a hostile file can point
// one anywhere, and the first read of it would crash the process.
void check_view(const std::string& name, const torch::Tensor& t) {
  if (t.numel() == 0) return;
  const int64_t values = static_cast<int64_t>(t.storage().nbytes()) / t.element_size();
  int64_t last = t.storage_offset();
  bool ok = last >= 0;
  for (int64_t i = 0; ok && i < t.dim(); i++) {
    const int64_t step = t.stride(i), n = t.size(i) - 1;
    ok = step >= 0 && (n == 0 || step <= (values - last) / n);
    if (ok) last += n * step;
  }
  if (!ok || last >= values) {
    std::ostringstream msg;
    msg << "tensor \"" << name << "\": offset " << t.storage_offset() << ", sizes " << t.sizes()
        << " and strides " << t.strides() << " reach outside its storage of " << values
        << " values";
    throw std::runtime_error(msg.str());
  }
}

}  // namespace

TensorDict dict_from_bytes(std::vector<char> bytes) {
  torch::IValue v = torch::pickle_load(bytes);
  if (!v.isGenericDict()) throw std::runtime_error("not a state dict");
  TensorDict dict;
  for (const auto& kv : v.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isTensor())
      throw std::runtime_error("state dict holds a non-tensor entry");
    check_view(kv.key().toStringRef(), kv.value().toTensor());
    dict.insert(kv.key().toStringRef(), kv.value().toTensor());
  }
  return dict;
}

TensorDict dict_from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  try {
    return dict_from_bytes(std::move(bytes));
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": not a readable torch.save state dict (" +
                             e.what_without_backtrace() + ")");
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

std::vector<char> dict_to_bytes(const TensorDict& dict) {
  return torch::pickle_save(dict);
}

const torch::Tensor& lookup(const TensorDict& dict, const std::string& key) {
  auto it = dict.find(key);
  if (it == dict.end())
    throw std::runtime_error("state dict has no tensor \"" + key + "\"");
  return it->value();
}

std::string shape_mismatch(const std::string& name, const torch::Tensor& got,
                           const torch::Tensor& want) {
  std::ostringstream msg;
  msg << "tensor \"" << name << "\" has shape " << got.sizes()
      << ", the network expects " << want.sizes();
  return msg.str();
}

Named named(const std::string& prefix, const torch::nn::Module& mod) {
  Named out;
  for (const auto& p : mod.named_parameters())
    out.emplace_back(prefix + p.key(), p.value());
  return out;
}

void load_params(const TensorDict& dict, const Named& params) {
  torch::NoGradGuard no_grad;
  for (auto [name, t] : params) {
    const auto& src = lookup(dict, name);
    if (src.sizes() != t.sizes())
      throw std::runtime_error(shape_mismatch(name, src, t));
    t.copy_(src);
  }
}

void put_adam(TensorDict& dict, const std::string& prefix,
              torch::optim::Adam& opt, const Named& params) {
  for (const auto& [name, t] : params) {
    auto it = opt.state().find(c10::guts::to_string(t.unsafeGetTensorImpl()));
    if (it == opt.state().end()) continue;  // no step taken yet
    auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
    dict.insert(prefix + name + ".exp_avg", s.exp_avg().cpu().contiguous());
    dict.insert(prefix + name + ".exp_avg_sq", s.exp_avg_sq().cpu().contiguous());
    dict.insert(prefix + name + ".step", torch::tensor(s.step(), torch::kInt64));
  }
}

void load_adam(const TensorDict& dict, const std::string& prefix,
               torch::optim::Adam& opt, const Named& params,
               torch::Device dev) {
  opt.state().clear();
  for (const auto& [name, t] : params) {
    const std::string key = prefix + name;
    if (dict.find(key + ".step") == dict.end()) continue;
    auto s = std::make_unique<torch::optim::AdamParamState>();
    s->step(lookup(dict, key + ".step").item<int64_t>());
    // In the parameter's memory format, as Adam would have made them.
    s->exp_avg(lookup(dict, key + ".exp_avg").to(dev).contiguous(t.suggest_memory_format()));
    s->exp_avg_sq(lookup(dict, key + ".exp_avg_sq").to(dev).contiguous(t.suggest_memory_format()));
    if (s->exp_avg().sizes() != t.sizes() || s->exp_avg_sq().sizes() != t.sizes())
      throw std::runtime_error("optimizer state for \"" + name +
                               "\" does not match the parameter's shape");
    opt.state()[c10::guts::to_string(t.unsafeGetTensorImpl())] = std::move(s);
  }
}

}  // namespace deepsim
