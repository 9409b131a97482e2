#!/usr/bin/env python3
"""Loads an EquiVAE checkpoint (the checkpoint.safetensors train_mnist and train_svhn write)
into a PyTorch module, to work with a trained model beside the engine.

    import sys; sys.path.insert(0, "python")
    import equivae_checkpoint
    model = equivae_checkpoint.load("runs/mnist/checkpoint.safetensors")  # float32, eval mode
    r = model.f_inv(x)                  # x [n, C·H·W] in [0, 1], NCHW rows → r [n, d_r]
                                        # (a tensor or a numpy array; no gradients by default)
    mu, logvar = model.encode(x, r)     # q(v | r, x) = N(mu, e^logvar)
    out = model.decode(r, v)            # [n, C·H·W]: Bernoulli logits, or the Gaussian's μ
    logits = model.classify(x)          # q(y | x), semi-supervised checkpoints only
    model.config                        # the run's configuration, {"latent_r": "16", ...}

The networks are the engine's (README, "The model"; docs/svhn.md): weights stored [in, out]
(y = x · W + b), convolutions k4 s2 p1 in PyTorch's layouts ([C_out, C_in, 4, 4], the
decoder's transposed ones [C_in, C_out, 4, 4]), ReLU between layers and after the encoder's
conv trunk, nothing after each network's last layer. The file's CRC-32 is checked when it
has one; a damaged file raises ValueError naming it.

    python3 python/equivae_checkpoint.py CHECKPOINT     # prints the configuration and networks

Needs numpy and torch only.
"""
import json
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

_DTYPES = {"F32": np.float32, "F64": np.float64}
_NETWORKS = ("finv", "encoder", "decoder", "classifier")


def read_safetensors(path):
    """(tensors {name: np.ndarray}, metadata {str: str}) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise ValueError(f"{path}: truncated (header of {size} bytes in a {len(blob)}-byte file)")
    try:
        header = json.loads(blob[8 : 8 + size])
    except ValueError as e:
        raise ValueError(f"{path}: the header is not JSON ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise ValueError(f"{path}: the header is not a JSON object of tensors and metadata")
    metadata = header.pop("__metadata__", {})
    data = memoryview(blob)[8 + size :]
    entries = {}
    for name, entry in header.items():
        try:
            dtype, shape = _DTYPES.get(entry["dtype"]), [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: tensor {name}: a malformed entry ({e!r})") from None
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']}, not F32 or F64")
        if end > len(data):
            raise ValueError(f"{path}: truncated: tensor {name} needs {end} data bytes, "
                             f"the file holds {len(data)}")
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end or end - begin != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{path}: tensor {name}: offsets {begin}..{end} do not hold its shape")
        entries[name] = (dtype, shape, begin, end)
    recorded = metadata.get("crc32")
    if recorded is not None and f"{zlib.crc32(data):08x}" != str(recorded).lower():
        raise ValueError(f"{path}: checksum mismatch: the file is corrupted")
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        array = np.frombuffer(data[begin:end], dtype="<" + np.dtype(dtype).str[1:])
        tensors[name] = array.reshape(shape).astype(dtype)  # a writable, native-order copy
    return tensors, metadata


class Network(torch.nn.Module):
    """One of the engine's networks: layers `prefix.0`, `prefix.1`, … in order; a 2-D weight
    is a dense layer on rows, a 4-D one a convolution (transposed in the decoder) on images."""

    def __init__(self, tensors, prefix, transposed, geometry):
        super().__init__()
        self.transposed, self.geometry = transposed, geometry  # geometry: (C, H, W) of x
        self.weights, self.biases = torch.nn.ParameterList(), torch.nn.ParameterList()
        while f"{prefix}.{len(self.weights)}.weight" in tensors:
            i = len(self.weights)
            for kind, out in (("weight", self.weights), ("bias", self.biases)):
                out.append(torch.nn.Parameter(torch.from_numpy(tensors[f"{prefix}.{i}.{kind}"])))

    def conv_layers(self):
        return sum(1 for W in self.weights if W.dim() == 4)

    def layer(self, i, h):
        W, b = self.weights[i], self.biases[i]
        if W.dim() == 2:
            return h.flatten(1) @ W + b
        if h.dim() == 2:  # rows → images: x's geometry, or the decoder's first feature map
            c, height, width = self.geometry
            if self.transposed:
                scale = 2 ** self.conv_layers()
                c, height, width = W.shape[0], height // scale, width // scale
            h = h.reshape(h.shape[0], c, height, width)
        conv = F.conv_transpose2d if self.transposed else F.conv2d
        return conv(h, W, b, stride=2, padding=1)

    def forward(self, h, layers=None, relu_last=False):
        """The first `layers` layers (all by default), ReLU between them (and after the last
        with relu_last); the result as rows."""
        layers = len(self.weights) if layers is None else layers
        for i in range(layers):
            h = self.layer(i, h)
            if i + 1 < layers or relu_last:
                h = torch.relu(h)
        return h.flatten(1)


class EquiVae(torch.nn.Module):
    """The four networks from {name: array} tensors (float32 or float64, kept as given) and the
    configuration {field: str} (channels, height and width of x: 1, 28, 28 when absent)."""

    def __init__(self, tensors, config, metadata=None):
        super().__init__()
        self.config, self.metadata = config, metadata or {}
        geometry = tuple(int(config.get(field, default))
                         for field, default in (("channels", 1), ("height", 28), ("width", 28)))
        for name in _NETWORKS:
            setattr(self, name, Network(tensors, name, name == "decoder", geometry))
        if not all(len(net.weights) for net in (self.finv, self.encoder, self.decoder)):
            raise ValueError("not an EquiVAE checkpoint: finv.*, encoder.* or decoder.* is missing")
        lv = tensors.get("decoder.logvar")
        self.logvar = None if lv is None else torch.nn.Parameter(torch.from_numpy(lv))  # [C]
        self.likelihood = "gaussian" if lv is not None else "bernoulli"

    def _tensor(self, a):
        """a as a tensor of the parameters' dtype (numpy arrays and float64 inputs accepted)."""
        return torch.as_tensor(a, dtype=self.finv.weights[0].dtype)

    def f_inv(self, x):
        """r = f_inv(x): the invariant embedding, [n, d_r]."""
        return self.finv(self._tensor(x))

    def encode(self, x, r):
        """(μ, log σ²) of q(v | r, x), each [n, d_v]: the encoder's own conv trunk on x (SVHN;
        ReLU after it), then its dense layers on [features ; r]."""
        x, r = self._tensor(x), self._tensor(r)
        trunk = self.encoder.conv_layers()
        features = self.encoder(x, trunk, relu_last=True) if trunk else x
        h = torch.cat([features, r], dim=1)
        for i in range(trunk, len(self.encoder.weights)):
            h = self.encoder.layer(i, h)
            if i + 1 < len(self.encoder.weights):
                h = torch.relu(h)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, r, v):
        """p(x | r, v)'s parameters, [n, C·H·W]: Bernoulli logits, or the Gaussian's μ (its
        log-variance per channel is self.logvar)."""
        return self.decoder(torch.cat([self._tensor(r), self._tensor(v)], dim=1))

    def reconstruct(self, x, r):
        """Pixel intensities of x decoded at v = μ(x, r): sigmoid(logits), or μ clamped to
        [0, 1]."""
        mu, _ = self.encode(x, r)
        out = self.decode(r, mu)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.clamp(0.0, 1.0)

    def classify(self, x):
        """q(y | x) logits, [n, C]; semi-supervised checkpoints only."""
        if len(self.classifier.weights) == 0:
            raise ValueError("this checkpoint has no q(y|x): it is not a semi-supervised run's")
        return self.classifier(self._tensor(x))


def load(path, requires_grad=False):
    """The EquiVAE of a checkpoint, float32, in eval mode; its parameters take gradients only
    with requires_grad (to fine-tune or probe it)."""
    tensors, metadata = read_safetensors(path)
    tensors = {name: array.astype(np.float32, copy=False) for name, array in tensors.items()}
    config = {k[len("config.") :]: v for k, v in metadata.items() if k.startswith("config.")}
    try:
        model = EquiVae(tensors, config, metadata)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    model.requires_grad_(requires_grad)
    return model.eval()


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[-2].strip(), file=sys.stderr)
        return 2
    model = load(sys.argv[1])
    print("config:", " ".join(f"{k}={v}" for k, v in sorted(model.config.items())))
    for name in _NETWORKS:
        net = getattr(model, name)
        shapes = ["x".join(str(d) for d in W.shape) for W in net.weights]
        if shapes:
            print(f"{name}: {', '.join(shapes)}")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"epoch {model.metadata.get('epoch', '?')}, {parameters} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
