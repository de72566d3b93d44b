"""DiAD's networks in PyTorch eager, for side-by-side runs against diad.

The worker reads a diad safetensors checkpoint (the weights and, in its
metadata, the model config), builds the autoencoder, the UNet and the
Semantic-Guided network as torch.nn modules with the same parameter names,
loads the weights strictly, and answers JSON requests, one per line on stdin:

  {"op": "denoise" | "encode" | "decode" | "reconstruct" | "train",
   "inputs": "<safetensors file of input tensors>",
   "output": "<safetensors file to write the result to, or empty>",
   ...op settings}

with one JSON line on stdout: {"seconds": ..., "rss_before_mib": ...,
"peak_rss_mib": ..., "loss": ...} or {"error": "..."}. Only the computation
is timed; inputs are read once per file and kept.

Written for diad from the model's definition (diad's Go packages unet and
autoencoder, the architecture of latent diffusion / DiAD); no code of those
projects is copied here.
"""

import json
import math
import os
import re
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

# Attention kernel: "sdpa" (torch's fused scaled_dot_product_attention, what
# diad calls) or "einsum" (softmax(q k^T / sqrt(d)) v in separate ops, as the
# reference's modules compute it without xformers).
ATTENTION = "sdpa"
# Variants of the computation, to measure candidate speed-ups on the same
# libtorch: "channels_last" (NHWC weights and activations), "bf16" (CPU
# autocast to bfloat16).
VARIANTS = set()


def attention(q, k, v):
    """Attention over [B, H, N, D] tensors with the 1/sqrt(D) scale."""
    if ATTENTION == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    w = torch.einsum("bhid,bhjd->bhij", q, k) * (q.shape[-1] ** -0.5)
    return torch.einsum("bhij,bhjd->bhid", w.softmax(dim=-1), v)


# --- safetensors -------------------------------------------------------------

DTYPES = {"F32": torch.float32, "F16": torch.float16, "F64": torch.float64, "I64": torch.int64}


def read_safetensors(path):
    """Returns ({name: float32 tensor}, metadata)."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None) or {}
        base = 8 + n
        for name, e in header.items():
            if e["dtype"] not in DTYPES:
                raise ValueError(f"{path}: tensor {name}: dtype {e['dtype']} not supported")
            t = torch.empty(e["shape"], dtype=DTYPES[e["dtype"]])
            start, end = e["data_offsets"]
            if end - start != t.numel() * t.element_size():
                raise ValueError(f"{path}: tensor {name}: {end - start} bytes for shape {e['shape']}")
            if t.numel():
                f.seek(base + start)
                if f.readinto(t.numpy()) != end - start:
                    raise ValueError(f"{path}: tensor {name}: file ends early")
            out[name] = t.float()
    return out, meta


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = tensors[name].detach().float().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


class ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 takes Go's 1e-05 (no dot) for a string; YAML 1.2, which Go
    writes, for a float."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


# --- UNet and SG network -----------------------------------------------------


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half).float()
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, groups, eps):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, cin, eps=eps), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(groups, cout, eps=eps), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1)
        )
        self.skip_connection = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.out_layers(h) + self.skip_connection(x)


class CrossAttention(nn.Module):
    def __init__(self, qdim, cdim, heads, dhead):
        super().__init__()
        inner = heads * dhead
        self.heads = heads
        self.to_q = nn.Linear(qdim, inner, bias=False)
        self.to_k = nn.Linear(cdim, inner, bias=False)
        self.to_v = nn.Linear(cdim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, qdim), nn.Dropout(0.0))

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b = x.shape[0]

        def heads(t):
            return t.view(b, t.shape[1], self.heads, t.shape[2] // self.heads).transpose(1, 2)

        o = attention(heads(self.to_q(x)), heads(self.to_k(ctx)), heads(self.to_v(ctx)))
        return self.to_out(o.transpose(1, 2).reshape(b, o.shape[2], -1))


class GEGLU(nn.Module):
    def __init__(self, din, dout):
        super().__init__()
        self.proj = nn.Linear(din, 2 * dout)

    def forward(self, x):
        val, gate = self.proj(x).chunk(2, dim=-1)
        return val * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim, heads, cdim):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim // heads)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, cdim, heads, dim // heads)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, ctx):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, ch, c):
        super().__init__()
        self.norm = nn.GroupNorm(c["norm_groups"], ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(ch, c["num_heads"], c["context_dim"]) for _ in range(c["transformer_depth"])]
        )
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        tok = self.proj_in(self.norm(x)).view(b, c, h * w).transpose(1, 2)
        for blk in self.transformer_blocks:
            tok = blk(tok, ctx)
        return self.proj_out(tok.transpose(1, 2).reshape(b, c, h, w)) + x


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Seq(nn.ModuleList):
    """A block: its layers in order, each given what it takes."""

    def forward(self, x, emb, ctx):
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, SpatialTransformer):
                x = m(x, ctx)
            else:
                x = m(x)
        return x


def build_encoder(mod, c):
    """Adds time_embed, input_blocks and middle_block to mod; returns the
    channel count after each input block."""
    mc, g, eps = c["model_channels"], c["norm_groups"], c["norm_eps"]
    ted = 4 * mc
    mod.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
    blocks = [Seq([nn.Conv2d(c["in_channels"], mc, 3, padding=1)])]
    ch, chans = mc, [mc]
    attn = set(c.get("attention_levels") or [])
    mult = c["channel_mult"]
    for level, m in enumerate(mult):
        for _ in range(c["num_res_blocks"]):
            layers = [ResBlock(ch, m * mc, ted, g, eps)]
            ch = m * mc
            if level in attn:
                layers.append(SpatialTransformer(ch, c))
            blocks.append(Seq(layers))
            chans.append(ch)
        if level != len(mult) - 1:
            blocks.append(Seq([Downsample(ch)]))
            chans.append(ch)
    mod.input_blocks = nn.ModuleList(blocks)
    mod.middle_block = Seq([ResBlock(ch, ch, ted, g, eps), SpatialTransformer(ch, c), ResBlock(ch, ch, ted, g, eps)])
    return chans


class UNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        chans = build_encoder(self, c)
        mc, g, eps, nrb = c["model_channels"], c["norm_groups"], c["norm_eps"], c["num_res_blocks"]
        attn = set(c.get("attention_levels") or [])
        ch, skips, blocks = chans[-1], list(chans), []
        for level in reversed(range(len(c["channel_mult"]))):
            for r in range(nrb + 1):
                out = c["channel_mult"][level] * mc
                layers = [ResBlock(ch + skips.pop(), out, 4 * mc, g, eps)]
                ch = out
                if level in attn:
                    layers.append(SpatialTransformer(ch, c))
                if level > 0 and r == nrb:
                    layers.append(Upsample(ch))
                blocks.append(Seq(layers))
        self.output_blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(nn.GroupNorm(g, ch, eps=eps), nn.SiLU(), nn.Conv2d(ch, c["out_channels"], 3, padding=1))

    def forward(self, x, t, ctx, control=None):
        emb = self.time_embed(timestep_embedding(t, self.c["model_channels"]))
        hs, h = [], x
        for b in self.input_blocks:
            h = b(h, emb, ctx)
            hs.append(h)
        h = self.middle_block(h, emb, ctx)
        control = list(control) if control is not None else None
        if control is not None:
            h = h + control.pop()
        for i, b in enumerate(self.output_blocks):
            skip = hs.pop()
            if control is not None and i < self.c["num_res_blocks"] + 1:
                skip = skip + control.pop()
            h = b(torch.cat([h, skip], dim=1), emb, ctx)
        return self.out(h)


class SemanticGuided(nn.Module):
    def __init__(self, c, sg):
        super().__init__()
        self.c = c
        chans = build_encoder(self, c)
        hc = sg["hint_channels"]
        s = {0: (2, 2, 2), 8: (2, 2, 2), 4: (2, 2, 1), 2: (2, 1, 1)}[sg.get("hint_downsampling") or 0]
        convs = [
            (sg["image_channels"], hc[0], 1), (hc[0], hc[0], 1), (hc[0], hc[1], s[0]), (hc[1], hc[1], 1),
            (hc[1], hc[2], s[1]), (hc[2], hc[2], 1), (hc[2], hc[3], s[2]),
        ]
        mods = []
        for cin, cout, stride in convs:
            mods += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU()]
        mods.append(nn.Conv2d(hc[3], c["model_channels"], 3, padding=1))
        self.input_hint_block = nn.Sequential(*mods)
        self.zero_convs = nn.ModuleList([nn.Sequential(nn.Conv2d(ch, ch, 1)) for ch in chans])
        self.middle_block_out = nn.Sequential(nn.Conv2d(chans[-1], chans[-1], 1))
        group, n = c["num_res_blocks"] + 1, len(chans)
        self.targets = list(range(n - group, n))
        self.sources = list(range(n - 2 * group, n - group))
        for i, src in enumerate(self.sources):
            for j, dst in enumerate(self.targets):
                conv = nn.Conv2d(chans[src], chans[dst], 3, stride=2, padding=1, bias=False)
                setattr(self, f"down{i + 1}{j + 1}", nn.Sequential(conv))
        self.in_eps = sg["instance_norm_eps"]

    def forward(self, x, t, ctx, image):
        emb = self.time_embed(timestep_embedding(t, self.c["model_channels"]))
        hint = self.input_hint_block(image)
        outs, h = [], x
        for i, b in enumerate(self.input_blocks):
            h = b(h, emb, ctx)
            if i == 0:
                h = h + hint
            outs.append(self.zero_convs[i](h))
        fused = []
        for j, dst in enumerate(self.targets):
            acc = outs[dst]
            for i, src in enumerate(self.sources):
                d = getattr(self, f"down{i + 1}{j + 1}")(outs[src])
                # InstanceNorm2d without affine parameters, written out:
                # torch's refuses the 1x1 maps of the tiny preset.
                var, mean = torch.var_mean(d, dim=(2, 3), correction=0, keepdim=True)
                acc = acc + F.silu((d - mean) * torch.rsqrt(var + self.in_eps))
            fused.append(F.silu(acc))
        for j, dst in enumerate(self.targets):
            outs[dst] = fused[j]
        outs.append(self.middle_block_out(self.middle_block(h, emb, ctx)))
        return outs


# --- autoencoder -------------------------------------------------------------


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, g, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(g, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(g, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x)


class AttnBlock(nn.Module):
    def __init__(self, ch, g, eps):
        super().__init__()
        self.norm = nn.GroupNorm(g, ch, eps=eps)
        self.q, self.k, self.v = nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)

        def tokens(t):
            return t.view(b, c, h * w).transpose(1, 2).unsqueeze(1)

        o = attention(tokens(self.q(n)), tokens(self.k(n)), tokens(self.v(n)))
        return self.proj_out(o.squeeze(1).transpose(1, 2).reshape(b, c, h, w)) + x


class ConvHolder(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=1, padding=1)


class AEDownsample(nn.Module):
    """Stride-2 conv after padding (0, 1, 0, 1), as latent diffusion's encoder."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def mid(ch, g, eps):
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = ResnetBlock(ch, ch, g, eps), AttnBlock(ch, g, eps), ResnetBlock(ch, ch, g, eps)
    return m


class Encoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        ch, g, eps, mult = a["ch"], a["norm_groups"], a["norm_eps"], a["ch_mult"]
        self.conv_in = nn.Conv2d(a["in_channels"], ch, 3, padding=1)
        self.down, cin = nn.ModuleList(), ch
        for i, m in enumerate(mult):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(a["num_res_blocks"]):
                lvl.block.append(ResnetBlock(cin, m * ch, g, eps))
                cin = m * ch
            if i != len(mult) - 1:
                lvl.downsample = AEDownsample(cin)
            self.down.append(lvl)
        self.mid = mid(cin, g, eps)
        self.norm_out = nn.GroupNorm(g, cin, eps=eps)
        self.conv_out = nn.Conv2d(cin, 2 * a["z_channels"], 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        ch, g, eps, mult = a["ch"], a["norm_groups"], a["norm_eps"], a["ch_mult"]
        cin = mult[-1] * ch
        self.conv_in = nn.Conv2d(a["z_channels"], cin, 3, padding=1)
        self.mid = mid(cin, g, eps)
        levels = {}
        for i in reversed(range(len(mult))):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(a["num_res_blocks"] + 1):
                lvl.block.append(ResnetBlock(cin, mult[i] * ch, g, eps))
                cin = mult[i] * ch
            if i != 0:
                lvl.upsample = ConvHolder(cin)
            levels[i] = lvl
        self.up = nn.ModuleList([levels[i] for i in range(len(mult))])
        self.norm_out = nn.GroupNorm(g, cin, eps=eps)
        self.conv_out = nn.Conv2d(cin, a["in_channels"], 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(len(self.up))):
            lvl = self.up[i]
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.encoder, self.decoder = Encoder(a), Decoder(a)
        self.quant_conv = nn.Conv2d(2 * a["z_channels"], 2 * a["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(a["embed_dim"], a["z_channels"], 1)

    def encode_latent(self, x, post_eps):
        """scale * (mean + exp(logvar / 2) * eps): a posterior sample as z0."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        return (post_eps * torch.exp(logvar * 0.5) + mean) * self.a["scale_factor"]

    def decode(self, latent):
        return self.decoder(self.post_quant_conv(latent * (1.0 / self.a["scale_factor"])))


# --- the whole model ---------------------------------------------------------


class DiAD(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.first_stage_model = AutoencoderKL(cfg["autoencoder"])
        self.model = nn.Module()
        self.model.diffusion_model = UNet(cfg["unet"])
        self.control_model = SemanticGuided(cfg["unet"], cfg["sg"])
        u = cfg["unet"]
        self.register_buffer("cond_stage_context", torch.zeros(1, u["context_len"], u["context_dim"]))
        s = cfg["schedule"]
        betas = torch.linspace(math.sqrt(s["beta_start"]), math.sqrt(s["beta_end"]), s["timesteps"], dtype=torch.float64, device="cpu") ** 2
        self.abar = torch.cumprod(1 - betas, dim=0).tolist()
        self.v_prediction = s.get("prediction") == "v"

    def context(self, b):
        return self.cond_stage_context.expand(b, -1, -1)

    def predict(self, z, t, image):
        """The guided denoiser's raw output (eps or v)."""
        ctx = self.context(z.shape[0])
        control = self.control_model(z, t, ctx, image)
        return self.model.diffusion_model(z, t, ctx, control)

    def coef(self, t, f):
        return torch.tensor([f(self.abar[i]) for i in t.tolist()], dtype=torch.float32).view(-1, 1, 1, 1)

    def eps(self, z, t, image):
        out = self.predict(z, t, image)
        if not self.v_prediction:
            return out
        return out * self.coef(t, math.sqrt) + z * self.coef(t, lambda a: math.sqrt(1 - a))

    def add_noise(self, z0, eps, t):
        return z0 * self.coef(t, math.sqrt) + eps * self.coef(t, lambda a: math.sqrt(1 - a))

    def reconstruct(self, image, post, noise, start, timesteps):
        """Encode, noise to start, DDIM (eta 0) on timesteps, decode."""
        b = image.shape[0]
        z = self.add_noise(self.first_stage_model.encode_latent(image, post), noise, torch.full((b,), start))
        for i, t in enumerate(timesteps):
            a = self.abar[t]
            a_prev = self.abar[timesteps[i + 1]] if i + 1 < len(timesteps) else self.abar[0]
            e = self.eps(z, torch.full((b,), t), image)
            x0 = (z - e * math.sqrt(1 - a)) * (1 / math.sqrt(a))
            z = x0 * math.sqrt(a_prev) + e * math.sqrt(1 - a_prev)
        return self.first_stage_model.decode(z), z

    def train_loss(self, image, post, t, eps):
        with torch.no_grad():
            z0 = self.first_stage_model.encode_latent(image, post)
        zt = self.add_noise(z0, eps, t)
        pred = self.predict(zt, t, image)
        target = eps
        if self.v_prediction:
            target = eps * self.coef(t, math.sqrt) - z0 * self.coef(t, lambda a: math.sqrt(1 - a))
        return F.mse_loss(pred, target)


def reference_trainable(name):
    """The reference's split: the SG network, the UNet's output blocks and head."""
    if name.startswith("control_model."):
        return True
    rest = name.removeprefix("model.diffusion_model.")
    return rest != name and (rest.startswith("output_blocks.") or rest.startswith("out."))


# --- the worker --------------------------------------------------------------


def proc_status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return -1.0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Worker:
    def __init__(self, checkpoint):
        weights, meta = read_safetensors(checkpoint)
        if "diad.config" not in meta:
            raise ValueError(f"{checkpoint}: not a diad checkpoint (no diad.config metadata)")
        # Built without storage, then given the file's tensors: the paper
        # model is 5 GB, and neither a random initialisation nor a second
        # copy is needed.
        with torch.device("meta"):
            self.model = DiAD(yaml.load(meta["diad.config"], Loader=ConfigLoader))
        self.model.load_state_dict(weights, strict=True, assign=True)
        del weights
        self.model.eval()
        if "channels_last" in VARIANTS:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.inputs = {}
        self.opt = None

    def load_inputs(self, path):
        if path not in self.inputs:
            x = read_safetensors(path)[0]
            if "channels_last" in VARIANTS:
                x = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in x.items()}
            self.inputs[path] = x
        return self.inputs[path]

    def train_step(self, x, req):
        if self.opt is None:
            params = []
            for name, p in self.model.named_parameters():
                p.requires_grad_(reference_trainable(name))
                if p.requires_grad:
                    params.append(p)
            o = req["adamw"]
            self.opt = torch.optim.AdamW(
                params, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"]
            )
        self.opt.zero_grad()
        loss = self.model.train_loss(x["image"], x["post"], x["t"].long(), x["eps"])
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach().reshape(1)}

    def count_flops(self, req):
        """The floating-point operations of one call of req's op, as torch's
        FlopCounterMode counts them (convolutions, matrix products and
        attention, each multiply-add two)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.run(dict(req, op=req["of"], output=""))
        return {"flops": counter.get_total_flops()}

    def run(self, req):
        if req["op"] == "flops":
            return self.count_flops(req)
        x = self.load_inputs(req["inputs"])
        op = req["op"]
        reset_peak()
        before = proc_status("VmRSS:")
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in VARIANTS):
            out = self.compute(op, x, req)
        out = {k: v.float() for k, v in out.items()}
        seconds = time.perf_counter() - start
        reply = {"seconds": seconds, "rss_before_mib": before, "peak_rss_mib": proc_status("VmHWM:")}
        if req.get("output"):
            write_safetensors(req["output"], out)
        return reply

    def compute(self, op, x, req):
        m = self.model
        if op == "train":
            out = self.train_step(x, req)
        else:
            with torch.no_grad():
                if op == "denoise":
                    out = {"eps": m.eps(x["z"], x["t"].long(), x["image"])}
                elif op == "encode":
                    out = {"latent": m.first_stage_model.encode_latent(x["image"], x["post"])}
                elif op == "decode":
                    out = {"image": m.first_stage_model.decode(x["latent"])}
                elif op == "reconstruct":
                    img, lat = m.reconstruct(x["image"], x["post"], x["noise"], req["start"], req["timesteps"])
                    out = {"image": img, "latent": lat}
                else:
                    raise ValueError(f"unknown op {op!r}")
        return out


def main():
    global ATTENTION, VARIANTS
    checkpoint, threads, ATTENTION = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if ATTENTION not in ("sdpa", "einsum"):
        raise SystemExit(f"attention {ATTENTION!r}: want sdpa or einsum")
    VARIANTS = set(v for v in sys.argv[4].split(",") if v)
    if VARIANTS - {"channels_last", "bf16"}:
        raise SystemExit(f"variants {sorted(VARIANTS)}: want channels_last, bf16")
    if threads > 0:
        torch.set_num_threads(threads)
    w = Worker(checkpoint)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = w.run(json.loads(line))
        except Exception as e:  # the Go side shows it; the worker stays up
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
