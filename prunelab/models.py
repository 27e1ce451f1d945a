"""The curriculum's models: readable ``nn.Sequential`` CNNs and MLPs with named layers, torchvision's ResNet-18
and a small vision transformer built from torch's own encoder layers.

All take x: float32 [B, 1, 28, 28] and return logits [B, 10].

| name        | model                                                   | parameters |
|-------------|---------------------------------------------------------|-----------:|
| lenet300    | LeNet-300-100, the MLP of Han et al. 2015 and of the lottery-ticket paper | 266,610 |
| lenet5      | LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling   | 61,706 |
| vgg_small   | VGG-style CNN, 3x3 conv + BatchNorm + ReLU, widths 16-32-64 | 77,786 |
| resnet18    | torchvision's ResNet-18, first conv taking 1 channel    | 11,175,370 |
| vit_tiny    | ViT: 7x7 patches -> 2 ``nn.TransformerEncoderLayer`` (E = 64, 4 heads) -> head | 71,946 |

Not in ``MODELS`` (it reads characters, not images): ``TinyGPT``, a character-level GPT with hand-written causal
self-attention (nanoGPT's layout), 825,919 parameters for the King James Bible's 63 characters (``prunelab.text``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import did_you_mean

__all__ = ["LeNet300", "LeNet5", "VGGSmall", "TinyViT", "CausalSelfAttention", "GPTBlock", "TinyGPT", "resnet18",
           "MODELS", "build_model", "count_parameters"]


class LeNet300(nn.Sequential):
    """LeNet-300-100: 784 -> 300 -> 100 -> 10, fully connected, ReLU."""

    def __init__(self, num_classes: int = 10):
        super().__init__(OrderedDict(
            flatten=nn.Flatten(),                              # [B, 1, 28, 28] -> [B, 784]
            fc1=nn.Linear(784, 300), relu1=nn.ReLU(),
            fc2=nn.Linear(300, 100), relu2=nn.ReLU(),
            fc3=nn.Linear(100, num_classes),
        ))


class LeNet5(nn.Sequential):
    """LeNet-5: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> 120 -> 84 -> 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(1, 6, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),   # -> [B, 6, 14, 14]
            conv2=nn.Conv2d(6, 16, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),             # -> [B, 16, 5, 5]
            flatten=nn.Flatten(),                                                            # -> [B, 400]
            fc1=nn.Linear(400, 120), relu3=nn.ReLU(),
            fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
            fc3=nn.Linear(84, num_classes),
        ))


class VGGSmall(nn.Sequential):
    """VGG-style CNN for channel pruning: three stages of two (conv 3x3 -> BatchNorm -> ReLU), each
    followed by 2x2 max-pooling (28 -> 14 -> 7 -> 3), then one Linear on the flattened [C, 3, 3] map.

    ``widths``: output channels of the three stages. Layers are named ``conv{i}``, ``bn{i}``, ``relu{i}``
    (i = 1..6), ``pool{s}`` (s = 1..3), ``flatten`` and ``fc``.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, i = 1, 0
        for stage, c_out in enumerate(widths, start=1):
            for _ in range(2):
                i += 1
                layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{i}"] = nn.ReLU()
                c_in = c_out
            layers[f"pool{stage}"] = nn.MaxPool2d(2)
        layers["flatten"] = nn.Flatten()                           # [B, C, 3, 3] -> [B, 9C]
        layers["fc"] = nn.Linear(c_in * 3 * 3, num_classes)
        super().__init__(layers)
        self.widths = tuple(widths)


class TinyViT(nn.Module):
    """A small vision transformer: the image cut into 7x7 patches (a conv with stride 7: 16 tokens of E values),
    plus a learned position per token, then ``depth`` ``nn.TransformerEncoderLayer`` (``heads`` heads, MLP 2E,
    pre-norm, GELU), then the mean over tokens and a Linear head.

    Its attention is torch's ``nn.MultiheadAttention``, which reads ``out_proj.weight`` without calling
    ``out_proj``: the case ``prunelab.masks.READERS`` exists for.
    """

    def __init__(self, embed_dim: int = 64, depth: int = 2, heads: int = 4, num_classes: int = 10,
                 in_channels: int = 1, image_size: int = 28, patch: int = 7):
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.patch = nn.Conv2d(in_channels, embed_dim, patch, stride=patch)       # -> [B, E, 4, 4]
        self.position = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, heads, 2 * embed_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position        # [B, 16, E]
        return self.head(self.norm(self.encoder(tokens)).mean(1))               # [B, classes]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, written out as in nanoGPT: one Linear ``qkv`` (E -> 3E) makes the queries,
    keys and values of every token, each of the H heads (d = E / H values each) lets a token attend to itself and
    the tokens before it, softmax(Q Kᵀ / √d + causal mask) V, and one Linear ``proj`` (E -> E) mixes the heads.

    Both Linears are called (not read), so prunelab's masks need no ``READERS`` hook here. The heads' width H · d is
    read from ``proj``, so ``prunelab.shrink.shrink_heads`` can remove whole heads (qkv E -> 3·H'·d, proj H'·d -> E).
    """

    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of heads ({heads}).")
        self.heads = heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()                                     # batch, tokens, embedding (E)
        inner = self.proj.in_features                          # H · d: E, or less once heads were removed
        H, d = self.heads, inner // self.heads
        q, k, v = self.qkv(x).split(inner, dim=2)             # 3 x [B, T, H·d]
        q = q.view(B, T, H, d).transpose(1, 2)                # [B, H, T, d]
        k = k.view(B, T, H, d).transpose(1, 2)                # [B, H, T, d]
        v = v.view(B, T, H, d).transpose(1, 2)                # [B, H, T, d]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # [B, H, T, d]: token t sees tokens <= t
        y = y.transpose(1, 2).contiguous().view(B, T, inner)  # [B, T, H·d]: the heads side by side again
        return self.proj(y)                                   # [B, T, C]


class GPTBlock(nn.Module):
    """One pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with the MLP E -> 4E -> E, GELU."""

    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, heads)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(OrderedDict(
            fc=nn.Linear(embed_dim, 4 * embed_dim), gelu=nn.GELU(), proj=nn.Linear(4 * embed_dim, embed_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))                        # [B, T, E]
        return x + self.mlp(self.ln2(x))                      # [B, T, E]


def token_ids(idx: torch.Tensor, block_size: int) -> torch.Tensor:
    """``idx`` [B, T] checked (T <= ``block_size``) and as int64: ids may come as floats holding whole numbers
    (``count_macs``'s probe is zeros of the model's float dtype). Opaque to torch.fx (``torch.fx.wrap``), so that
    TinyGPT traces into one graph for ``prunelab.graph`` despite these checks."""
    T = idx.size(1)
    if T > block_size:
        raise ValueError(f"TinyGPT reads at most block_size = {block_size} tokens, got {T}; "
                         f"pass the last {block_size} (idx[:, -{block_size}:]).")
    return idx.long() if idx.is_floating_point() else idx


torch.fx.wrap("token_ids")


class TinyGPT(nn.Module):
    """A small character-level GPT: token ids [B, T] (T <= ``block_size``) -> next-token logits [B, T, vocab_size].

    Token embedding + learned position embedding, ``depth`` ``GPTBlock`` s (pre-norm, causal self-attention with
    ``heads`` heads, MLP 4E with GELU), a final LayerNorm and a Linear ``head`` (not tied to the token embedding, so
    pruning the head's weight leaves the embedding alone). Initialised as nanoGPT does: N(0, 0.02) weights, zero
    biases, and N(0, 0.02 / √(2 · depth)) for the two projections that write into the residual stream.

    Ids may come as floats holding whole numbers (``prunelab.metrics.count_macs`` feeds ``torch.zeros`` of the
    model's float dtype): they are cast to int64. ``count_macs(model, (1, T))`` then counts every Linear, T times,
    and the attention products Q Kᵀ and the weighted sum of V (2 · T² · E per block, causal or not: the attention
    is found by ``graph.head_layout``).
    """

    def __init__(self, vocab_size: int, block_size: int = 128, embed_dim: int = 128, depth: int = 4, heads: int = 4):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.token = nn.Embedding(vocab_size, embed_dim)
        self.position = nn.Embedding(block_size, embed_dim)
        self.blocks = nn.Sequential(*(GPTBlock(embed_dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:                                # Linear and Embedding weights; LayerNorm keeps its 1s
                std = 0.02 / math.sqrt(2 * depth) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx = token_ids(idx, self.block_size)                 # [B, T] int64, T <= block_size
        positions = torch.arange(idx.size(1), device=idx.device)   # [T]
        x = self.token(idx) + self.position(positions)        # [B, T, E]
        x = self.norm(self.blocks(x))                         # [B, T, E]
        return self.head(x)                                   # [B, T, vocab_size]


def resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 (random init, no download) with its first conv taking 1 input channel."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "vgg_small": VGGSmall,
    "resnet18": resnet18,
    "vit_tiny": TinyViT,
}


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` listing the known names (and the closest one) if ``name`` is unknown."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(MODELS)}.{did_you_mean(name, MODELS)}")


def build_model(name: str, *, seed: int = 0) -> nn.Module:
    """A freshly initialised model; the same ``name`` and ``seed`` give bit-identical weights.

    Seeds a private copy of the RNG: torch's global random state is left as it was.
    """
    check_model_name(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (weights and biases; BatchNorm's running statistics are buffers)."""
    return sum(p.numel() for p in model.parameters())
