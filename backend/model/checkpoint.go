package model

import (
	"fmt"
	"slices"
	"strings"

	"github.com/diad-project/diad/backend/torchrt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/cliptext"
)

// Metadata keys diad writes into its safetensors files.
const (
	MetaFormat = "format"
	MetaConfig = "diad.config"
	MetaPreset = "diad.preset"
	// FormatVersion identifies diad's checkpoint layout.
	FormatVersion = "diad-v1"
)

// Save writes all parameters (reference names) and the model config to a
// safetensors file, atomically. extra metadata is added as given.
func (m *DiAD) Save(path string, extra map[string]string) (err error) {
	return m.save(path, extra, checkpoint.Save)
}

func (m *DiAD) save(path string, extra map[string]string, write func(string, map[string]*ts.Tensor, map[string]string) error) (err error) {
	defer torchrt.Pin()()
	defer torchrt.Recover(&err, "save "+path)
	c := m.Config
	if m.Patch != nil {
		c.PatchMemory = m.Patch.Config() // with the groups its last build chose
	}
	cfg, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	meta := map[string]string{MetaFormat: FormatVersion, MetaConfig: string(cfg), MetaPreset: m.Config.Preset}
	for k, v := range extra {
		meta[k] = v
	}
	return write(path, checkpoint.StoreTensors(m.Store), meta)
}

// LoadWeights loads a checkpoint's tensors into the model (see checkpoint.LoadInto).
func (m *DiAD) LoadWeights(path string, o checkpoint.LoadOptions) (rep checkpoint.Report, err error) {
	defer torchrt.Pin()()
	defer torchrt.Recover(&err, "load "+path)
	r, err := checkpoint.Open(path)
	if err != nil {
		return checkpoint.Report{}, err
	}
	defer r.Close()
	rep, err = checkpoint.LoadInto(m.Store, r, o)
	if err != nil {
		return rep, fmt.Errorf("load %s: %w", path, err)
	}
	return rep, nil
}

// ConfigFromCheckpoint returns the config stored in a diad checkpoint, or the
// preset whose parameter table the file matches exactly (reference checkpoints
// carry no config).
func ConfigFromCheckpoint(r checkpoint.Reader) (Config, error) {
	if raw, ok := r.Metadata()[MetaConfig]; ok {
		var c Config
		if err := yaml.Unmarshal([]byte(raw), &c); err != nil {
			return Config{}, fmt.Errorf("checkpoint config: %w", err)
		}
		return c, c.Validate()
	}
	for _, m := range MatchPresets(r) {
		if m.Exact() {
			return Preset(m.Preset)
		}
	}
	return Config{}, fmt.Errorf("checkpoint carries no diad config and matches no preset exactly")
}

// Open builds the model a checkpoint describes and loads its weights.
func Open(path string, device gotch.Device) (*DiAD, checkpoint.Report, error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return nil, checkpoint.Report{}, err
	}
	defer r.Close()
	cfg, err := ConfigFromCheckpoint(r)
	if err != nil {
		return nil, checkpoint.Report{}, fmt.Errorf("open %s: %w", path, err)
	}
	m, err := New(cfg, device)
	if err != nil {
		return nil, checkpoint.Report{}, fmt.Errorf("open %s: %w", path, err)
	}
	opts := checkpoint.LoadOptions{IgnoreUnexpected: true}
	if !hasEntry(r, ContextName) {
		// Reference checkpoints have no stored context: the text model's
		// encoding of the empty prompt, computed below, or zeros.
		opts.Prefixes = []string{PrefixAutoencoder, PrefixUNet, PrefixSG}
	}
	var rep checkpoint.Report
	err = torchrt.Do(func() error {
		var err error
		rep, err = checkpoint.LoadInto(m.Store, r, opts)
		return err
	})
	if err == nil && !hasEntry(r, ContextName) && cliptext.Has(r) {
		err = m.setContextFromText(r)
	}
	if err != nil {
		m.Free()
		return nil, rep, fmt.Errorf("open %s: %w", path, err)
	}
	return m, rep, nil
}

// ContextSource says which cross-attention context a checkpoint gives the
// model: the stored one, the empty prompt encoded by its CLIP text model
// (official DiAD and Stable Diffusion checkpoints, as the reference does),
// or zeros.
func ContextSource(r checkpoint.Reader) string {
	switch {
	case hasEntry(r, ContextName):
		return "stored (" + ContextName + ")"
	case cliptext.Has(r):
		return "the empty prompt encoded by the checkpoint's CLIP text model (" + strings.TrimSuffix(cliptext.Prefix, ".") + ")"
	}
	return "zeros (the checkpoint has neither a context nor a text model)"
}

// setContextFromText replaces the context with the empty prompt's encoding
// by r's text model; diad's Save then stores it as ContextName.
func (m *DiAD) setContextFromText(r checkpoint.Reader) error {
	ctx, err := cliptext.EmptyPromptContext(r, m.Device())
	if err != nil {
		return err
	}
	defer ctx.MustDrop()
	want := []int64{1, m.Config.UNet.ContextLen, m.Config.UNet.ContextDim}
	if got := ctx.MustSize(); !slices.Equal(got, want) {
		return fmt.Errorf("the text model's context is %v, the UNet attends to %v", got, want)
	}
	return torchrt.Do(func() error {
		torchrt.NoGrad(func() { torchrt.Copy_(m.Context, ctx) })
		return nil
	})
}

// PresetMatch is how a checkpoint's tensors compare with one preset, overall
// and per component.
type PresetMatch struct {
	Preset     string                       `json:"preset"`
	Components map[string]checkpoint.Report `json:"-"`
	// Matched lists the components whose tensors are all present and well shaped.
	Matched    []string `json:"matched"`
	Missing    int      `json:"missing"`
	Unexpected int      `json:"unexpected"`
	Mismatched int      `json:"mismatched"`
}

// Exact reports a full match: every model tensor present and well shaped.
func (p PresetMatch) Exact() bool { return p.Missing == 0 && p.Mismatched == 0 && len(p.Matched) == 3 }

// Components of a DiAD checkpoint, by prefix.
var Components = map[string]string{
	"autoencoder": PrefixAutoencoder,
	"unet":        PrefixUNet,
	"sg":          PrefixSG,
}

// MatchPresets compares a checkpoint with every preset's parameter table.
func MatchPresets(r checkpoint.Reader) []PresetMatch {
	var out []PresetMatch
	for _, name := range PresetNames() {
		cfg, err := Preset(name)
		if err != nil {
			continue
		}
		spec, err := Spec(cfg)
		if err != nil {
			continue
		}
		pm := PresetMatch{Preset: name, Components: map[string]checkpoint.Report{}}
		for _, comp := range []string{"autoencoder", "unet", "sg"} {
			rep := checkpoint.Plan(spec, r, checkpoint.LoadOptions{Prefixes: []string{Components[comp]}})
			pm.Components[comp] = rep
			if len(rep.Missing) == 0 && len(rep.Mismatched) == 0 {
				pm.Matched = append(pm.Matched, comp)
			}
			pm.Missing += len(rep.Missing)
			pm.Mismatched += len(rep.Mismatched)
		}
		all := checkpoint.Plan(spec, r, checkpoint.LoadOptions{})
		pm.Unexpected = len(all.Unexpected)
		out = append(out, pm)
	}
	return out
}

func hasEntry(r checkpoint.Reader, name string) bool {
	for _, e := range r.Entries() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// InitFromStableDiffusion loads the UNet and the autoencoder from a Stable
// Diffusion v1.x checkpoint (reference names; the CLIP text encoder and other
// extra tensors are ignored) and initialises the SG network's encoder from the
// loaded UNet, as the reference does before training.
func (m *DiAD) InitFromStableDiffusion(path string) (checkpoint.Report, error) {
	rep, err := m.LoadWeights(path, checkpoint.LoadOptions{Prefixes: []string{PrefixUNet, PrefixAutoencoder}, IgnoreUnexpected: true})
	if err != nil {
		return rep, err
	}
	r, err := checkpoint.Open(path)
	if err != nil {
		return rep, err
	}
	defer r.Close()
	if cliptext.Has(r) {
		if err := m.setContextFromText(r); err != nil {
			return rep, fmt.Errorf("init from %s: %w", path, err)
		}
	}
	defer torchrt.Pin()()
	if err := m.SG.CopyEncoderFrom(PrefixSG, PrefixUNet, m.Store); err != nil {
		return rep, fmt.Errorf("init from %s: %w", path, err)
	}
	return rep, nil
}

// autoencoderKey maps the keys of a stand-alone autoencoder checkpoint (the
// DiAD authors' fine-tuned ones: encoder.*, decoder.*, quant_conv.*, plus the
// training loss's LPIPS/discriminator tensors) onto the model's names.
func autoencoderKey(name string) string {
	if strings.HasPrefix(name, PrefixAutoencoder) {
		return name
	}
	for _, p := range []string{"encoder.", "decoder.", "quant_conv.", "post_quant_conv."} {
		if strings.HasPrefix(name, p) {
			return PrefixAutoencoder + name
		}
	}
	return "" // loss.*, discriminator, EMA counters: not part of the model
}

// LoadAutoencoder loads only the autoencoder from a checkpoint with either
// stand-alone (encoder.*) or full-model (first_stage_model.*) names.
func (m *DiAD) LoadAutoencoder(path string) (checkpoint.Report, error) {
	return m.LoadWeights(path, checkpoint.LoadOptions{Prefixes: []string{PrefixAutoencoder}, Rename: autoencoderKey, IgnoreUnexpected: true})
}

// ReadConfig returns the model config a checkpoint carries (or the preset it
// matches) without loading its weights.
func ReadConfig(path string) (Config, error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return Config{}, err
	}
	defer r.Close()
	c, err := ConfigFromCheckpoint(r)
	if err != nil {
		return Config{}, fmt.Errorf("open %s: %w", path, err)
	}
	return c, nil
}

// SaveHalf is Save with the tensors stored as float16 (half the size; they
// load back as float32), for models that ship with the repository.
func (m *DiAD) SaveHalf(path string, extra map[string]string) error {
	meta := map[string]string{"diad.dtype": "float16"}
	for k, v := range extra {
		meta[k] = v
	}
	return m.save(path, meta, checkpoint.SaveHalf)
}
