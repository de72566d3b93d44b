package cliptext

import (
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/internal/pytorch"
	"github.com/diad-project/diad/backend/torchrt"
)

// A CLIP text transformer written with plain PyTorch modules (the
// structure of Hugging Face's CLIPTextModel: pre-norm layers, causal
// attention, quick GELU, final layer norm), random weights saved as a
// Lightning-style checkpoint beside a UNet tensor, and its encoding of the
// empty prompt as the reference tokenises it.
const referenceScript = `
import json, sys, torch
torch.manual_seed(0)
V, W, L, H, N = 49408, 128, 2, 2, 77
class Layer(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.layer_norm1, s.layer_norm2 = torch.nn.LayerNorm(W), torch.nn.LayerNorm(W)
        s.self_attn = torch.nn.Module()
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            setattr(s.self_attn, n, torch.nn.Linear(W, W))
        s.mlp = torch.nn.Module()
        s.mlp.fc1, s.mlp.fc2 = torch.nn.Linear(W, 4 * W), torch.nn.Linear(4 * W, W)
    def forward(s, x):
        h = s.layer_norm1(x)
        a = s.self_attn
        def heads(t): return t.view(1, N, H, W // H).transpose(1, 2)
        q, k, v = heads(a.q_proj(h)), heads(a.k_proj(h)), heads(a.v_proj(h))
        w = q @ k.transpose(-1, -2) / (W // H) ** 0.5
        w = w + torch.full((N, N), float("-inf")).triu(1)
        o = (w.softmax(-1) @ v).transpose(1, 2).reshape(1, N, W)
        x = x + a.out_proj(o)
        f = s.mlp.fc1(s.layer_norm2(x))
        return x + s.mlp.fc2(f * torch.sigmoid(1.702 * f))
class Text(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.embeddings = torch.nn.Module()
        s.embeddings.token_embedding = torch.nn.Embedding(V, W)
        s.embeddings.position_embedding = torch.nn.Embedding(N, W)
        s.encoder = torch.nn.Module()
        s.encoder.layers = torch.nn.ModuleList([Layer() for _ in range(L)])
        s.final_layer_norm = torch.nn.LayerNorm(W)
    def forward(s, ids):
        x = s.embeddings.token_embedding(ids) + s.embeddings.position_embedding(torch.arange(N))
        for l in s.encoder.layers:
            x = l(x)
        return s.final_layer_norm(x)
m = Text()
with torch.no_grad():
    for p in m.parameters():  # LayerNorm's ones/zeros would hide a swapped weight and bias
        p.add_(torch.randn_like(p) * 0.1)
    ids = torch.tensor([[49406] + [49407] * (N - 1)])
    ctx = m(ids)
sd = {"cond_stage_model.transformer.text_model." + k: v for k, v in m.state_dict().items()}
sd["model.diffusion_model.out.2.bias"] = torch.zeros(4)
torch.save({"state_dict": sd, "global_step": 1}, sys.argv[1] + "/clip.ckpt")
print(json.dumps(ctx.flatten().tolist()))
`

func TestEmptyPromptMatchesPyTorch(t *testing.T) {
	dir := t.TempDir()
	var want []float64
	if err := json.Unmarshal(pytorch.Run(t, referenceScript, dir), &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != 77*128 {
		t.Fatalf("the reference gave %d values", len(want))
	}
	r, err := checkpoint.Open(filepath.Join(dir, "clip.ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !Has(r) {
		t.Fatal("the checkpoint's text model was not found")
	}
	c, err := ConfigOf(r)
	if err != nil {
		t.Fatal(err)
	}
	if c != (Config{Vocab: 49408, Width: 128, Layers: 2, Heads: 2, MaxLen: 77, Eps: 1e-5}) {
		t.Fatalf("config %+v", c)
	}
	ctx, err := EmptyPromptContext(r, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.MustDrop()
	if s := ctx.MustSize(); len(s) != 3 || s[0] != 1 || s[1] != 77 || s[2] != 128 {
		t.Fatalf("context shape %v", s)
	}
	worst := 0.0
	for i, v := range ctx.Float64Values() {
		worst = math.Max(worst, math.Abs(v-want[i]))
	}
	t.Logf("max |diad - PyTorch| = %.2g", worst)
	if worst > 1e-4 {
		t.Fatalf("max abs difference %.3g > 1e-4", worst)
	}
}

func TestEmptyPromptTokens(t *testing.T) {
	ids := EmptyPrompt(77)
	if len(ids) != 77 || ids[0] != StartToken || ids[1] != EndToken || ids[76] != EndToken {
		t.Fatalf("tokens %v", ids)
	}
}

func TestRefusesBadInput(t *testing.T) {
	defer torchrt.Pin()()
	e := &Encoder{Config: Config{Vocab: 10, MaxLen: 4}}
	if _, err := e.Forward(nil); err == nil {
		t.Error("no tokens accepted")
	}
	if _, err := e.Forward([]int64{1, 2, 3, 4, 5}); err == nil {
		t.Error("five tokens for four positions accepted")
	}
	if _, err := e.Forward([]int64{10}); err == nil {
		t.Error("a token outside the vocabulary accepted")
	}
}
