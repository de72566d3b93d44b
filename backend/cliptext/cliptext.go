// Package cliptext is CLIP's text transformer (the one Stable Diffusion v1
// conditions on, ViT-L/14's), with Hugging Face's parameter names, for one
// job: turning the empty prompt into the cross-attention context DiAD's
// reference feeds its UNet. Official DiAD and Stable Diffusion checkpoints
// hold this model's weights rather than the context, so diad computes the
// context once when it loads such a checkpoint.
package cliptext

import (
	"fmt"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// Prefix is where Stable Diffusion checkpoints keep the text model.
const Prefix = "cond_stage_model.transformer.text_model."

// CLIP's byte-pair vocabulary ends with its two special tokens.
const (
	StartToken = 49406 // <|startoftext|>
	EndToken   = 49407 // <|endoftext|>
)

// Config is the transformer's shape.
type Config struct {
	Vocab, Width, Layers, Heads, MaxLen int64
	Eps                                 float64
}

// ViTL14 is Stable Diffusion v1's text encoder (openai/clip-vit-large-patch14).
var ViTL14 = Config{Vocab: 49408, Width: 768, Layers: 12, Heads: 12, MaxLen: 77, Eps: 1e-5}

// headDim is the width of one attention head in every CLIP text model
// (512/8, 768/12, 1024/16), which lets ConfigOf infer the head count.
const headDim = 64

// EmptyPrompt is the reference's tokenisation of "": the start token, the
// end token, and the end token again as padding up to maxLen (the pad token
// of openai/clip-vit-large-patch14's tokenizer, padding="max_length").
func EmptyPrompt(maxLen int64) []int64 {
	ids := make([]int64, maxLen)
	ids[0] = StartToken
	for i := 1; i < len(ids); i++ {
		ids[i] = EndToken
	}
	return ids
}

type layer struct {
	ln1, ln2     *layers.LayerNorm
	q, k, v, out *layers.Linear
	fc1, fc2     *layers.Linear
}

// Encoder is the text transformer.
type Encoder struct {
	Config Config
	tokens *ts.Tensor // [Vocab, Width]
	pos    *ts.Tensor // [MaxLen, Width]
	layers []layer
	final  *layers.LayerNorm
}

// New creates the parameters under p (Prefix's names below it).
func New(p layers.Path, c Config) *Encoder {
	e := &Encoder{Config: c}
	emb := p.Sub("embeddings")
	e.tokens = emb.Sub("token_embedding").Param("weight", []int64{c.Vocab, c.Width}, layers.Uniform(0.02))
	e.pos = emb.Sub("position_embedding").Param("weight", []int64{c.MaxLen, c.Width}, layers.Uniform(0.02))
	for i := int64(0); i < c.Layers; i++ {
		lp := p.Sub("encoder").Sub("layers").Subf("%d", i)
		at := lp.Sub("self_attn")
		e.layers = append(e.layers, layer{
			ln1: layers.NewLayerNorm(lp.Sub("layer_norm1"), c.Width, c.Eps),
			ln2: layers.NewLayerNorm(lp.Sub("layer_norm2"), c.Width, c.Eps),
			q:   layers.NewLinear(at.Sub("q_proj"), c.Width, c.Width, false),
			k:   layers.NewLinear(at.Sub("k_proj"), c.Width, c.Width, false),
			v:   layers.NewLinear(at.Sub("v_proj"), c.Width, c.Width, false),
			out: layers.NewLinear(at.Sub("out_proj"), c.Width, c.Width, false),
			fc1: layers.NewLinear(lp.Sub("mlp").Sub("fc1"), c.Width, 4*c.Width, false),
			fc2: layers.NewLinear(lp.Sub("mlp").Sub("fc2"), 4*c.Width, c.Width, false),
		})
	}
	e.final = layers.NewLayerNorm(p.Sub("final_layer_norm"), c.Width, c.Eps)
	return e
}

// Forward encodes one token sequence to its last hidden state [1, len, Width]
// (after the final layer norm: what the reference's FrozenCLIPEmbedder returns).
func (e *Encoder) Forward(ids []int64) (*ts.Tensor, error) {
	if n := int64(len(ids)); n == 0 || n > e.Config.MaxLen {
		return nil, fmt.Errorf("cliptext: %d tokens, want 1..%d", n, e.Config.MaxLen)
	}
	for _, id := range ids {
		if id < 0 || id >= e.Config.Vocab {
			return nil, fmt.Errorf("cliptext: token %d outside the vocabulary of %d", id, e.Config.Vocab)
		}
	}
	var out *ts.Tensor
	err := torchrt.Do(func() error {
		dev := e.tokens.MustDevice()
		idx := ts.MustOfSlice(ids).MustTo(dev, true)
		x := ts.MustEmbedding(e.tokens, idx, -1, false, false)
		idx.MustDrop()
		pos := e.pos.MustNarrow(0, 0, int64(len(ids)), false)
		x = x.MustAdd(pos, true).MustUnsqueeze(0, true)
		pos.MustDrop()
		for _, l := range e.layers {
			x = l.forward(x, e.Config.Heads)
		}
		out = e.final.Forward(x)
		x.MustDrop()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cliptext: %w", err)
	}
	return out, nil
}

// forward is one pre-norm layer: causal self-attention, then the quick-GELU
// MLP, each added back to x (freed).
func (l layer) forward(x *ts.Tensor, heads int64) *ts.Tensor {
	h := l.ln1.Forward(x)
	q := layers.SplitHeads(l.q.Forward(h), heads, true)
	k := layers.SplitHeads(l.k.Forward(h), heads, true)
	v := layers.SplitHeads(l.v.Forward(h), heads, true)
	h.MustDrop()
	o := ts.MustScaledDotProductAttention(q, k, v, layers.None, 0, true, nil)
	q.MustDrop()
	k.MustDrop()
	v.MustDrop()
	m := layers.MergeHeads(o, true)
	a := l.out.Forward(m)
	m.MustDrop()
	x = x.MustAdd(a, true)
	a.MustDrop()
	h = l.ln2.Forward(x)
	f := l.fc1.Forward(h)
	h.MustDrop()
	// quick GELU: f * sigmoid(1.702 f)
	s := f.MustMulScalar(ts.FloatScalar(1.702), false).MustSigmoid(true)
	g := f.MustMul(s, true)
	s.MustDrop()
	o2 := l.fc2.Forward(g)
	g.MustDrop()
	x = x.MustAdd(o2, true)
	o2.MustDrop()
	return x
}

// Has reports whether a checkpoint holds a text model under Prefix: its
// token embedding at least (some checkpoints keep only stray buffers such
// as position_ids there, which is no model).
func Has(r checkpoint.Reader) bool {
	for _, e := range r.Entries() {
		if e.Name == Prefix+"embeddings.token_embedding.weight" {
			return true
		}
	}
	return false
}

// ConfigOf reads the text model's shape from a checkpoint's tensors.
func ConfigOf(r checkpoint.Reader) (Config, error) {
	c := Config{Eps: ViTL14.Eps}
	for _, e := range r.Entries() {
		name, ok := strings.CutPrefix(e.Name, Prefix)
		if !ok {
			continue
		}
		switch {
		case name == "embeddings.token_embedding.weight" && len(e.Shape) == 2:
			c.Vocab, c.Width = e.Shape[0], e.Shape[1]
		case name == "embeddings.position_embedding.weight" && len(e.Shape) == 2:
			c.MaxLen = e.Shape[0]
		case strings.HasPrefix(name, "encoder.layers."):
			var i int64
			if _, err := fmt.Sscanf(strings.TrimPrefix(name, "encoder.layers."), "%d.", &i); err == nil && i+1 > c.Layers {
				c.Layers = i + 1
			}
		}
	}
	if c.Vocab <= EndToken || c.Width <= 0 || c.Width%headDim != 0 || c.MaxLen < 2 || c.Layers == 0 {
		return Config{}, fmt.Errorf("cliptext: the checkpoint's text model is incomplete or not CLIP's (vocabulary %d, width %d, %d positions, %d layers)", c.Vocab, c.Width, c.MaxLen, c.Layers)
	}
	c.Heads = c.Width / headDim
	return c, nil
}

// EmptyPromptContext builds the text model a checkpoint holds, loads its
// weights and returns the empty prompt's encoding [1, MaxLen, Width] on
// device. Nothing of the text model stays in memory.
func EmptyPromptContext(r checkpoint.Reader, device gotch.Device) (*ts.Tensor, error) {
	c, err := ConfigOf(r)
	if err != nil {
		return nil, err
	}
	store := layers.NewStore(device)
	defer store.Free()
	var e *Encoder
	if err := torchrt.Do(func() error {
		e = New(subPrefix(store.Root()), c)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("cliptext: %w", err)
	}
	if _, err := checkpoint.LoadInto(store, r, checkpoint.LoadOptions{Prefixes: []string{Prefix}, IgnoreUnexpected: true}); err != nil {
		return nil, fmt.Errorf("cliptext: %w", err)
	}
	var out *ts.Tensor
	torchrt.NoGrad(func() { out, err = e.Forward(EmptyPrompt(c.MaxLen)) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

func subPrefix(p layers.Path) layers.Path {
	for _, part := range strings.Split(strings.TrimSuffix(Prefix, "."), ".") {
		p = p.Sub(part)
	}
	return p
}
