package model

import (
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

func within(t *testing.T, what string, got int64, want float64, rel float64) {
	t.Helper()
	if d := math.Abs(float64(got)-want) / want; d > rel {
		t.Errorf("%s: %d parameters, want %.4gM within %.1f%% (off by %.3f%%)", what, got, want/1e6, rel*100, d*100)
	}
}

func TestPaperParameterCounts(t *testing.T) {
	spec, err := Spec(PaperConfig())
	if err != nil {
		t.Fatal(err)
	}
	within(t, "UNet", spec.Count(PrefixUNet), 859.52e6, 0.001)
	within(t, "SG network", spec.Count(PrefixSG), 471.9e6, 0.001)
	within(t, "autoencoder", spec.Count(PrefixAutoencoder), 83.65e6, 0.001)
	// Spot checks of reference names and shapes.
	for name, shape := range map[string][]int64{
		"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": {320, 768},
		"model.diffusion_model.output_blocks.2.1.conv.weight":                           {1280, 1280, 3, 3},
		"model.diffusion_model.output_blocks.5.2.conv.weight":                           {1280, 1280, 3, 3},
		"model.diffusion_model.out.2.weight":                                            {4, 320, 3, 3},
		"control_model.input_hint_block.14.weight":                                      {320, 256, 3, 3},
		"control_model.down11.0.weight":                                                 {1280, 640, 3, 3},
		"control_model.down33.0.weight":                                                 {1280, 1280, 3, 3},
		"control_model.zero_convs.11.0.weight":                                          {1280, 1280, 1, 1},
		"control_model.middle_block_out.0.bias":                                         {1280},
		"first_stage_model.encoder.down.0.downsample.conv.weight":                       {128, 128, 3, 3},
		"first_stage_model.decoder.up.3.block.2.conv2.weight":                           {512, 512, 3, 3},
		"first_stage_model.encoder.mid.attn_1.q.weight":                                 {512, 512, 1, 1},
		"first_stage_model.quant_conv.weight":                                           {8, 8, 1, 1},
	} {
		p := spec.Get(name)
		if p == nil {
			t.Errorf("paper spec lacks %s", name)
		} else if !slices.Equal(p.Shape, shape) {
			t.Errorf("%s: shape %v, want %v", name, p.Shape, shape)
		}
	}
	if spec.Get("control_model.down11.0.bias") != nil {
		t.Error("SFF convs must have no bias")
	}
}

func newTiny(t testing.TB) *DiAD {
	t.Helper()
	torchrt.ManualSeed(1)
	m, err := New(TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

// randomise gives every parameter under prefix random values, so that
// zero-initialised layers no longer hide differences.
func randomise(m *DiAD, prefix string) {
	torchrt.NoGrad(func() {
		for _, p := range m.Store.Params() {
			if strings.HasPrefix(p.Name, prefix) && !p.Buffer {
				torchrt.Uniform_(p.Tensor, -0.2, 0.2)
			}
		}
	})
}

func tinyInputs(m *DiAD, b int64, seed uint64) (images, zt *ts.Tensor) {
	n := diffusion.NewNoise(seed)
	s := int64(m.Config.ImageSize)
	images = n.Normal([]int64{b, 3, s, s}, gotch.CPU)
	l := int64(m.Config.LatentSize())
	zt = n.Normal([]int64{b, 4, l, l}, gotch.CPU)
	return images, zt
}

func equalBits(a, b *ts.Tensor) bool {
	x, y := a.Float64Values(), b.Float64Values()
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func maxAbs(a *ts.Tensor) float64 {
	m := 0.0
	for _, v := range a.Float64Values() {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

func TestSGChangesNothingAtInit(t *testing.T) {
	m := newTiny(t)
	randomise(m, PrefixUNet) // the UNet as if pretrained; SG fresh
	images, zt := tinyInputs(m, 2, 7)
	defer images.MustDrop()
	defer zt.MustDrop()
	var guided, plain *ts.Tensor
	torchrt.NoGrad(func() {
		guided = m.PredictEps(zt, []int{10, 500}, images)
		plain = m.PredictEpsUnguided(zt, []int{10, 500})
	})
	defer guided.MustDrop()
	defer plain.MustDrop()
	if maxAbs(plain) == 0 {
		t.Fatal("test is vacuous: the randomised UNet predicts zeros")
	}
	if !equalBits(guided, plain) {
		t.Fatal("SG network at initialisation changed the UNet output")
	}
	// The test can fail: a non-zero zero-conv must change the output.
	torchrt.NoGrad(func() { torchrt.Fill_(m.Store.Get(PrefixSG+"middle_block_out.0.bias").Tensor, 0.5) })
	var steered *ts.Tensor
	torchrt.NoGrad(func() { steered = m.PredictEps(zt, []int{10, 500}, images) })
	defer steered.MustDrop()
	if equalBits(steered, plain) {
		t.Fatal("a non-zero SG output did not change the prediction")
	}
}

func TestFreezingAfterOptimizerSteps(t *testing.T) {
	m := newTiny(t)
	randomise(m, PrefixAutoencoder)
	before := map[string][]float64{}
	for _, p := range m.Store.Params() {
		before[p.Name] = p.Tensor.Float64Values()
	}
	trainable := m.Store.Trainable()
	for _, p := range trainable {
		if !FreezeReference.Trainable(p.Name) {
			t.Fatalf("%s is trainable under the reference split", p.Name)
		}
	}
	opt, err := optim.NewAdamW(trainable, optim.AdamWConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	noise := diffusion.NewNoise(3)
	images, _ := tinyInputs(m, 2, 9)
	defer images.MustDrop()
	for step := 0; step < 4; step++ {
		opt.ZeroGrad()
		loss, err := m.TrainLoss(images, noise)
		if err != nil {
			t.Fatal(err)
		}
		loss.MustBackward()
		loss.MustDrop()
		if step == 3 {
			// Gradients exist only on trainable parameters.
			for _, p := range m.Store.Params() {
				g := p.Tensor.MustGrad(false)
				has := g.MustDefined()
				g.MustDrop()
				if has && !FreezeReference.Trainable(p.Name) {
					t.Errorf("frozen %s has a gradient", p.Name)
				}
			}
		}
		opt.Update()
	}
	changed, unchanged := 0, 0
	for _, p := range m.Store.Params() {
		after := p.Tensor.Float64Values()
		same := true
		for i := range after {
			if after[i] != before[p.Name][i] {
				same = false
				break
			}
		}
		switch {
		case !FreezeReference.Trainable(p.Name) && !same:
			t.Errorf("frozen %s changed", p.Name)
		case FreezeReference.Trainable(p.Name) && !same:
			changed++
		case FreezeReference.Trainable(p.Name):
			unchanged++
		}
	}
	for _, name := range []string{
		PrefixUNet + "out.2.weight", PrefixUNet + "output_blocks.0.0.in_layers.2.weight",
		PrefixSG + "middle_block_out.0.weight", PrefixSG + "input_hint_block.0.weight",
		PrefixSG + "zero_convs.7.0.weight",
	} {
		after := m.Store.Get(name).Tensor.Float64Values()
		diff := 0.0
		for i := range after {
			diff = math.Max(diff, math.Abs(after[i]-before[name][i]))
		}
		if diff == 0 {
			t.Errorf("trainable %s did not change", name)
		}
	}
	t.Logf("%d trainable tensors changed, %d unchanged (SG outputs the UNet does not use)", changed, unchanged)
	if changed < 3*unchanged {
		t.Errorf("only %d of %d trainable tensors changed", changed, changed+unchanged)
	}
}

func TestFreezeNoneTrainsEncoder(t *testing.T) {
	m := newTiny(t)
	m.SetFreeze(FreezeNone)
	for _, name := range []string{PrefixUNet + "input_blocks.0.0.weight", PrefixUNet + "time_embed.0.weight"} {
		if !m.Store.Get(name).Tensor.MustRequiresGrad() {
			t.Errorf("%s frozen under FreezeNone", name)
		}
	}
	if m.Store.Get(PrefixAutoencoder + "encoder.conv_in.weight").Tensor.MustRequiresGrad() {
		t.Error("autoencoder trainable under FreezeNone")
	}
	if _, err := ParseFreeze("bogus"); err == nil {
		t.Error("bad freeze accepted")
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	m := newTiny(t)
	randomise(m, "")
	dir := t.TempDir()
	path := filepath.Join(dir, "tiny.safetensors")
	if err := m.Save(path, map[string]string{"note": "test"}); err != nil {
		t.Fatal(err)
	}
	loaded, rep, err := Open(path, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Free()
	if len(rep.Loaded) != len(m.Store.Params()) {
		t.Fatalf("loaded %d of %d tensors", len(rep.Loaded), len(m.Store.Params()))
	}
	for _, p := range m.Store.Params() {
		if !equalBits(p.Tensor, loaded.Store.Get(p.Name).Tensor) {
			t.Fatalf("%s differs after the round trip", p.Name)
		}
	}
	images, zt := tinyInputs(m, 2, 13)
	defer images.MustDrop()
	defer zt.MustDrop()
	var a, b *ts.Tensor
	torchrt.NoGrad(func() {
		a = m.PredictEps(zt, []int{3, 999}, images)
		b = loaded.PredictEps(zt, []int{3, 999}, images)
	})
	defer a.MustDrop()
	defer b.MustDrop()
	if !equalBits(a, b) {
		t.Fatal("a reloaded checkpoint predicts differently")
	}

	// A mis-shaped tensor is refused, naming the key; nothing is half-loaded.
	tensors := checkpoint.StoreTensors(m.Store)
	badName := PrefixSG + "zero_convs.3.0.weight"
	wrong := ts.MustZeros([]int64{7, 7, 1, 1}, gotch.Float, gotch.CPU)
	defer wrong.MustDrop()
	tensors[badName] = wrong
	badPath := filepath.Join(dir, "bad.safetensors")
	if err := checkpoint.Save(badPath, tensors, nil); err != nil {
		t.Fatal(err)
	}
	fresh := newTiny(t)
	_, err = fresh.LoadWeights(badPath, checkpoint.LoadOptions{})
	if !errors.Is(err, checkpoint.ErrIncompatible) || !strings.Contains(err.Error(), badName) {
		t.Fatalf("mis-shaped load: %v", err)
	}
	// Missing and unexpected tensors are named too.
	delete(tensors, badName)
	tensors["model.diffusion_model.extra.weight"] = wrong
	if err := checkpoint.Save(badPath, tensors, nil); err != nil {
		t.Fatal(err)
	}
	_, err = fresh.LoadWeights(badPath, checkpoint.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), badName) || !strings.Contains(err.Error(), "model.diffusion_model.extra.weight") {
		t.Fatalf("missing/unexpected load: %v", err)
	}
	// Presets are recognised from the parameter table alone.
	r, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, pm := range MatchPresets(r) {
		if (pm.Preset == "tiny") != pm.Exact() {
			t.Errorf("preset %s: exact=%v (%+v)", pm.Preset, pm.Exact(), pm)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	c := TinyConfig()
	c.ImageSize = 60
	if err := c.Validate(); err == nil {
		t.Error("image size 60 accepted")
	}
	c = TinyConfig()
	c.UNet.NormGroups = 7
	if _, err := New(c, gotch.CPU); err == nil {
		t.Error("channels not divisible by groups accepted")
	}
	if _, err := Preset("huge"); err == nil {
		t.Error("unknown preset accepted")
	}
}

func TestInitFromStableDiffusionAndAutoencoderFiles(t *testing.T) {
	src := newTiny(t)
	randomise(src, "")
	dir := t.TempDir()
	// An SD-style file: UNet + autoencoder under reference names, a CLIP
	// tensor, no SG network.
	sd := map[string]*ts.Tensor{"cond_stage_model.transformer.text_model.embeddings.position_ids": src.Context}
	ae := map[string]*ts.Tensor{"loss.discriminator.main.0.weight": src.Context}
	for _, p := range src.Store.Params() {
		switch {
		case strings.HasPrefix(p.Name, PrefixUNet):
			sd[p.Name] = p.Tensor
		case strings.HasPrefix(p.Name, PrefixAutoencoder):
			sd[p.Name] = p.Tensor
			ae[strings.TrimPrefix(p.Name, PrefixAutoencoder)] = p.Tensor
		}
	}
	sdPath, aePath := filepath.Join(dir, "sd.safetensors"), filepath.Join(dir, "ae.safetensors")
	if err := checkpoint.Save(sdPath, sd, nil); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Save(aePath, ae, nil); err != nil {
		t.Fatal(err)
	}
	m := newTiny(t)
	if _, err := m.InitFromStableDiffusion(sdPath); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"input_blocks.1.0.in_layers.2.weight", "middle_block.1.proj_in.weight", "time_embed.2.bias"} {
		if !equalBits(m.Store.Get(PrefixSG+name).Tensor, src.Store.Get(PrefixUNet+name).Tensor) {
			t.Errorf("SG %s was not initialised from the loaded UNet", name)
		}
	}
	if !equalBits(m.Store.Get(PrefixSG+"zero_convs.0.0.weight").Tensor, ts.MustZeros([]int64{32, 32, 1, 1}, gotch.Float, gotch.CPU)) {
		t.Error("SG zero convs must stay zero")
	}
	m2 := newTiny(t)
	rep, err := m2.LoadAutoencoder(aePath)
	if err != nil {
		t.Fatal(err)
	}
	name := PrefixAutoencoder + "decoder.conv_out.weight"
	if len(rep.Loaded) == 0 || !equalBits(m2.Store.Get(name).Tensor, src.Store.Get(name).Tensor) {
		t.Fatalf("autoencoder not loaded: %d tensors", len(rep.Loaded))
	}
}
