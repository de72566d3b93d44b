package model

import (
	"fmt"
	"strings"

	"github.com/diad-project/diad/backend/torchrt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/autoencoder"
	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/kernelcheck"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/patchmemory"
	"github.com/diad-project/diad/backend/recompute"
	"github.com/diad-project/diad/backend/seghead"
	"github.com/diad-project/diad/backend/unet"
)

// DiAD is a built model: its parameters (one store, reference names) and parts.
type DiAD struct {
	Config Config
	Store  *layers.Store
	AE     *autoencoder.AutoencoderKL
	UNet   *unet.UNet
	SG     *unet.SemanticGuided
	// Head is the learnt anomaly map (nil unless Config.Head asks for one).
	Head *seghead.Net
	// Patch is the memory of training patches (nil unless
	// Config.PatchMemory asks for one).
	Patch    *patchmemory.Memory
	Schedule *diffusion.Schedule
	// Context is the constant cross-attention context [1, ContextLen, ContextDim].
	Context *ts.Tensor

	// recompute: the denoiser's training losses run the UNet's and the SG
	// network's blocks on a tape (activation recomputation); tape is the
	// one the last loss recorded, until Backward.
	recompute bool
	tape      *recompute.Tape
}

// build creates all parameters in store.
func build(c Config, store *layers.Store) (*DiAD, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	sched, err := diffusion.NewSchedule(c.Schedule)
	if err != nil {
		return nil, err
	}
	root := store.Root()
	m := &DiAD{Config: c, Store: store, Schedule: sched}
	if m.AE, err = autoencoder.New(subPrefix(root, PrefixAutoencoder), c.Autoencoder); err != nil {
		return nil, err
	}
	if m.UNet, err = unet.NewUNet(subPrefix(root, PrefixUNet), c.UNet); err != nil {
		return nil, err
	}
	if m.SG, err = unet.NewSemanticGuided(subPrefix(root, PrefixSG), c.UNet, c.SG); err != nil {
		return nil, err
	}
	m.Context = root.Buffer(ContextName, []int64{1, c.UNet.ContextLen, c.UNet.ContextDim}, layers.Zeros)
	if c.Head.Enabled() {
		if m.Head, err = seghead.New(subPrefix(root, seghead.Prefix), c.Head); err != nil {
			return nil, err
		}
	}
	if c.PatchMemory.Enabled() {
		if m.Patch, err = patchmemory.New(subPrefix(root, patchmemory.Prefix), c.PatchMemory); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// AddPatchMemory gives a model without a patch memory an empty one (Build
// fills it).
func (m *DiAD) AddPatchMemory(c patchmemory.Config) error {
	if m.Patch != nil {
		return fmt.Errorf("model: already has a patch memory")
	}
	cfg := m.Config
	cfg.PatchMemory = c
	if err := cfg.Validate(); err != nil {
		return err
	}
	return torchrt.Do(func() error {
		p, err := patchmemory.New(subPrefix(m.Store.Root(), patchmemory.Prefix), c)
		if err != nil {
			return err
		}
		m.Patch, m.Config = p, cfg
		return nil
	})
}

// UsePatchMemory gives the model a patch memory of config c, empty: a new
// one when it has none, else its own reconfigured (c must then have its
// shape; it may choose the memory differently, e.g. as a coreset).
func (m *DiAD) UsePatchMemory(c patchmemory.Config) error {
	if m.Patch == nil {
		return m.AddPatchMemory(c)
	}
	if err := m.Patch.Reconfigure(c); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	m.Config.PatchMemory = m.Patch.Config()
	return nil
}

// AddHead gives a model without an anomaly head a freshly initialised one
// (a model trained before heads existed, or without one).
func (m *DiAD) AddHead(c seghead.Config) error {
	if m.Head != nil {
		return fmt.Errorf("model: already has an anomaly head")
	}
	cfg := m.Config
	cfg.Head = c
	if err := cfg.Validate(); err != nil {
		return err
	}
	return torchrt.Do(func() error {
		h, err := seghead.New(subPrefix(m.Store.Root(), seghead.Prefix), c)
		if err != nil {
			return err
		}
		m.Head, m.Config = h, cfg
		return nil
	})
}

// subPrefix descends a dotted prefix such as "model.diffusion_model.".
func subPrefix(p layers.Path, prefix string) layers.Path {
	for _, part := range strings.Split(strings.TrimSuffix(prefix, "."), ".") {
		p = p.Sub(part)
	}
	return p
}

// NewPreset builds a model of a named preset (Preset) with freshly
// initialised parameters on device.
func NewPreset(name string, device gotch.Device) (*DiAD, error) {
	c, err := Preset(name)
	if err != nil {
		return nil, err
	}
	return New(c, device)
}

// New builds a model with freshly initialised parameters on device. The SG
// network's encoder starts as a copy of the UNet's (the reference's
// initialisation from SD), and the reference freezing split is applied.
func New(c Config, device gotch.Device) (*DiAD, error) {
	// Nothing trains or scores on kernels that compute wrong on this CPU
	// (the check runs once per process; it may switch oneDNN off).
	if _, err := kernelcheck.Ensure(); err != nil {
		return nil, fmt.Errorf("build model: %w", err)
	}
	store := layers.NewStore(device)
	var m *DiAD
	err := torchrt.Do(func() error {
		var err error
		if m, err = build(c, store); err != nil {
			return err
		}
		if err := m.SG.CopyEncoderFrom(PrefixSG, PrefixUNet, store); err != nil {
			return err
		}
		m.SetFreeze(FreezeReference)
		return nil
	})
	if err != nil {
		// What was allocated before the failure (libtorch out of memory
		// part-way) is released.
		store.Free()
		return nil, fmt.Errorf("build model: %w", err)
	}
	return m, nil
}

// Spec lists the parameter names and shapes of a configuration without
// allocating any tensor.
func Spec(c Config) (*layers.Store, error) {
	store := layers.NewSpecStore()
	if _, err := build(c, store); err != nil {
		return nil, err
	}
	return store, nil
}

// Free releases every tensor of the model.
func (m *DiAD) Free() {
	m.tape.Free()
	m.tape = nil
	m.Store.Free()
}

// Device is where the model lives.
func (m *DiAD) Device() gotch.Device { return m.Store.Device() }

// Freeze is a training split.
type Freeze string

const (
	// FreezeReference trains the SG network, the UNet's output blocks and head;
	// the autoencoder, the UNet's time embedding, input blocks and middle are frozen.
	FreezeReference Freeze = "reference"
	// FreezeNone trains the UNet and SG network entirely (training from scratch,
	// when no pretrained SD weights exist); the autoencoder stays frozen.
	FreezeNone Freeze = "none"
	// FreezeAutoencoderOnly trains only the autoencoder (stage-1 fine-tuning).
	FreezeAutoencoderOnly Freeze = "autoencoder"
	// FreezeHeadOnly trains only the anomaly head (after the denoiser).
	FreezeHeadOnly Freeze = "head"
)

// Trainable reports whether parameter name trains under f.
func (f Freeze) Trainable(name string) bool {
	switch f {
	case FreezeAutoencoderOnly:
		return strings.HasPrefix(name, PrefixAutoencoder)
	case FreezeHeadOnly:
		return strings.HasPrefix(name, seghead.Prefix)
	case FreezeNone:
		return strings.HasPrefix(name, PrefixUNet) || strings.HasPrefix(name, PrefixSG)
	default:
		if strings.HasPrefix(name, PrefixSG) {
			return true
		}
		rest, ok := strings.CutPrefix(name, PrefixUNet)
		return ok && (strings.HasPrefix(rest, "output_blocks.") || strings.HasPrefix(rest, "out."))
	}
}

// ParseFreeze validates a freeze name.
func ParseFreeze(s string) (Freeze, error) {
	switch f := Freeze(s); f {
	case FreezeReference, FreezeNone, FreezeAutoencoderOnly, FreezeHeadOnly:
		return f, nil
	}
	return "", fmt.Errorf("model: unknown freeze %q (want reference, none, autoencoder or head)", s)
}

// SetFreeze applies a training split to the parameters' requires_grad.
func (m *DiAD) SetFreeze(f Freeze) { m.Store.SetTrainable(f.Trainable) }

// SetRecompute switches activation recomputation ("gradient checkpointing",
// latent diffusion's use_checkpoint) on or off for the denoiser's training
// losses: the UNet's and the SG network's blocks keep only their inputs and
// outputs in the forward pass and are recomputed, one at a time, in
// Backward. The gradients are those of an ordinary backward; peak memory
// falls, time rises by about one forward pass. Losses must then be
// back-propagated with Backward.
func (m *DiAD) SetRecompute(on bool) { m.recompute = on }

// Backward back-propagates a loss made by this model's training losses (or
// a scalar computed from one, e.g. divided for gradient accumulation), with
// the recomputed blocks when SetRecompute is on.
func (m *DiAD) Backward(loss *ts.Tensor) error {
	tp := m.tape
	m.tape = nil
	if tp == nil {
		return torchrt.Backward(loss, false)
	}
	defer tp.Free()
	if err := torchrt.Backward(loss, true); err != nil {
		return err
	}
	return tp.Backward()
}

// startTape begins the recording of a training loss's blocks, when
// recomputation is on and gradients are recorded; the returned function
// ends it.
func (m *DiAD) startTape() (end func()) {
	if !m.recompute || !torchrt.GradEnabled() {
		return func() {}
	}
	m.tape.Free() // a loss that was never back-propagated
	tp := recompute.New()
	m.UNet.SetTape(tp)
	m.SG.SetTape(tp)
	return func() {
		m.UNet.SetTape(nil)
		m.SG.SetTape(nil)
		m.tape = tp
	}
}

// context expands the constant context to the batch.
func (m *DiAD) context(batch int64) *ts.Tensor {
	return m.Context.MustExpand([]int64{batch, m.Config.UNet.ContextLen, m.Config.UNet.ContextDim}, false, false)
}

// PredictEps is the guided denoiser: SG(zt, t, image) steers UNet(zt, t).
// image is the ImageNet-normalised input [B, 3, H, W]; t holds one timestep per
// batch element.
func (m *DiAD) PredictEps(zt *ts.Tensor, t []int, image *ts.Tensor) *ts.Tensor {
	return m.Schedule.EpsFrom(m.predict(zt, t, image), zt, t)
}

// predict is the guided denoiser's raw output, in the parameterisation of
// m.Schedule.Prediction (what the training loss compares).
func (m *DiAD) predict(zt *ts.Tensor, t []int, image *ts.Tensor) *ts.Tensor {
	return m.predictScaled(zt, t, image, nil)
}

// predictScaled is predict with the SG network's controls multiplied by
// scale (broadcast over them, e.g. [B, 1, 1, 1]; nil: 1).
func (m *DiAD) predictScaled(zt *ts.Tensor, t []int, image, scale *ts.Tensor) *ts.Tensor {
	defer torchrt.Pin()()
	b := zt.MustSize()[0]
	tt := diffusion.TimestepTensor(t, zt.MustDevice())
	defer tt.MustDrop()
	ctx := m.context(b)
	defer ctx.MustDrop()
	control := m.SG.Forward(zt, tt, ctx, image)
	if scale != nil {
		for i, c := range control {
			control[i] = c.MustMul(scale, true)
		}
	}
	out := m.UNet.Forward(zt, tt, ctx, control)
	for _, c := range control {
		c.MustDrop()
	}
	return out
}

// PredictEpsUnguided runs the UNet without SG control (for tests and ablations).
func (m *DiAD) PredictEpsUnguided(zt *ts.Tensor, t []int) *ts.Tensor {
	defer torchrt.Pin()()
	tt := diffusion.TimestepTensor(t, zt.MustDevice())
	defer tt.MustDrop()
	ctx := m.context(zt.MustSize()[0])
	defer ctx.MustDrop()
	return m.Schedule.EpsFrom(m.UNet.Forward(zt, tt, ctx, nil), zt, t)
}
