// The fixed backbones a comparator or an inversion's target is built on,
// in torchvision's layout: AlexNet, VGG16 and the project's Exemplar-CNN
// (whose surrogate-class head the comparator task trains).
#pragma once

#include <torch/torch.h>

#include <utility>
#include <vector>

#include "layers.h"

namespace deepsim {

// A feature network in torchvision's layout (features, avgpool, classifier)
// and the chain of its modules that ends at the chosen layer.
struct FeatureNetImpl : nn::Module {
  nn::Sequential features, classifier;
  nn::AdaptiveAvgPool2d avgpool{nullptr};
  std::vector<nn::AnyModule> chain;

  FeatureNetImpl(nn::Sequential f, int64_t pool, nn::Sequential c)
      : features(std::move(f)),
        classifier(std::move(c)),
        avgpool(nn::AdaptiveAvgPool2d(pool)) {
    register_module("features", features);
    register_module("avgpool", avgpool);
    register_module("classifier", classifier);
  }

  // Cuts the network after nf feature modules and, when nc > 0, after the
  // pooling and nc classifier modules.
  void cut(size_t nf, size_t nc) {
    chain.clear();
    for (size_t i = 0; i < nf; i++) chain.push_back(features->begin()[i]);
    if (nc == 0) return;
    chain.emplace_back(avgpool);
    chain.emplace_back(nn::Flatten());
    for (size_t i = 0; i < nc; i++) chain.push_back(classifier->begin()[i]);
  }

  torch::Tensor forward(torch::Tensor x) {
    for (auto& m : chain) x = m.forward(x);
    return x;
  }
};
TORCH_MODULE(FeatureNet);

// torchvision's AlexNet.
inline FeatureNet alexnet() {
  return FeatureNet(
      nn::Sequential(conv(3, 64, 11, 4, 2), nn::ReLU(), maxpool(3, 2),
                     conv(64, 192, 5, 1, 2), nn::ReLU(), maxpool(3, 2),
                     conv(192, 384, 3, 1, 1), nn::ReLU(),
                     conv(384, 256, 3, 1, 1), nn::ReLU(),
                     conv(256, 256, 3, 1, 1), nn::ReLU(), maxpool(3, 2)),
      6,
      nn::Sequential(nn::Dropout(0.5), nn::Linear(256 * 6 * 6, 4096), nn::ReLU(),
                     nn::Dropout(0.5), nn::Linear(4096, 4096), nn::ReLU(),
                     nn::Linear(4096, 1000)));
}

// torchvision's VGG16 (configuration D, no batch norm).
inline FeatureNet vgg16() {
  nn::Sequential f;
  int64_t in = 3;
  for (int64_t v : {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0,
                    512, 512, 512, 0}) {
    if (v == 0) {
      f->push_back(maxpool(2, 2));
    } else {
      f->push_back(conv(in, v, 3, 1, 1));
      f->push_back(nn::ReLU());
      in = v;
    }
  }
  return FeatureNet(
      f, 7,
      nn::Sequential(nn::Linear(512 * 7 * 7, 4096), nn::ReLU(), nn::Dropout(0.5),
                     nn::Linear(4096, 4096), nn::ReLU(), nn::Dropout(0.5),
                     nn::Linear(4096, 1000)));
}

// The project's Exemplar-CNN for 64 px inputs: small enough to train on two
// cores and to ship, with a surrogate-class head used only in training.
inline FeatureNet exemplar(int64_t classes) {
  return FeatureNet(
      nn::Sequential(conv(3, 32, 5), nn::ReLU(), maxpool(2, 2),     // conv1
                     conv(32, 64, 5), nn::ReLU(), maxpool(2, 2),    // conv2
                     conv(64, 128, 3), nn::ReLU(), maxpool(2, 2),   // conv3
                     conv(128, 256, 3), nn::ReLU()),                // conv4
      1,
      nn::Sequential(nn::Linear(256, 512), nn::ReLU(), nn::Dropout(0.5),
                     nn::Linear(512, classes)));
}

}  // namespace deepsim
