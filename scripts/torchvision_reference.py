"""torchvision's ResNet-18 and ResNet-34, randomly initialised here (nothing downloaded), with
batch-norm statistics and affine terms drawn far from the identity so that every tensor matters:
each state dict saved with torch.save, and its logits for random inputs written as JSON for
`training/examples/torchvision_check.rs` to compare with HEAL's loaded network."""
import json
import sys
from pathlib import Path

import torch
import torchvision

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
for name, blocks in [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3])]:
    model = getattr(torchvision.models, name)(weights=None, num_classes=1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    torch.save(model.state_dict(), out / f"{name}.pth")
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    (out / f"{name}.json").write_text(json.dumps({
        "blocks": blocks,
        "side": 64,
        "classes": 1000,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "inputs": x.flatten().tolist(),
        "logits": y.flatten().tolist(),
    }))
    print(name, "saved", out / f"{name}.pth")
