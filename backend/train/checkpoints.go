package train

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/shared"
)

// saveCheckpoint writes model, optimizer and state atomically.
func (t *trainer) saveCheckpoint() error {
	noise, err := t.noise.MarshalBinary()
	if err != nil {
		return err
	}
	t.st.Noise = noise
	stateJSON, err := json.Marshal(t.st)
	if err != nil {
		return fmt.Errorf("train: checkpoint state: %w", err)
	}
	cfgYAML, err := yaml.Marshal(t.cfg)
	if err != nil {
		return fmt.Errorf("train: checkpoint config: %w", err)
	}
	modelYAML, err := yaml.Marshal(t.m.Config)
	if err != nil {
		return fmt.Errorf("train: checkpoint model config: %w", err)
	}
	tensors := checkpoint.StoreTensors(t.m.Store)
	optStep := int64(0)
	if t.opt != nil && t.st.Stage != StageDone {
		for name, v := range t.opt.State() {
			tensors[optPrefix+name] = v
		}
		optStep = t.opt.Step
	}
	if t.ema != nil {
		for name, v := range t.ema.state() {
			tensors[name] = v
		}
	}
	meta := map[string]string{model.MetaFormat: model.FormatVersion, model.MetaConfig: string(modelYAML), model.MetaPreset: t.m.Config.Preset,
		metaState: string(stateJSON), metaConfig: string(cfgYAML), "diad.optimizer_step": fmt.Sprint(optStep)}
	path := filepath.Join(t.cfg.OutDir, CheckpointFile)
	if err := checkpoint.Save(path, tensors, meta); err != nil {
		return err
	}
	t.emit(Event{Kind: shared.EventCheckpoint, Step: t.st.Step, Message: path})
	t.log.Info("checkpoint", "stage", t.st.Stage, "step", t.st.Step, "path", path)
	if t.opts.afterCheckpoint != nil {
		t.opts.afterCheckpoint(t.st.Stage, t.st.Step)
	}
	return nil
}

// restore rebuilds the model, optimizer and state from a checkpoint. On an
// error it frees all it made (model, optimizer, average) before returning.
func (t *trainer) restore(path string, dev gotch.Device) (m *model.DiAD, err error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	defer func() {
		if err == nil {
			return
		}
		if t.ema != nil {
			t.ema.free()
			t.ema = nil
		}
		if t.opt != nil {
			t.opt.Free()
			t.opt = nil
		}
		if m != nil {
			m.Free()
			m, t.m = nil, nil
		}
		err = fmt.Errorf("resume %s: %w", path, err)
	}()
	var st state
	if err := json.Unmarshal([]byte(r.Metadata()[metaState]), &st); err != nil {
		return nil, fmt.Errorf("training state: %w", err)
	}
	mcfg, err := model.ConfigFromCheckpoint(r)
	if err != nil {
		return nil, err
	}
	if m, err = model.New(mcfg, dev); err != nil {
		return nil, err
	}
	if _, err := checkpoint.LoadInto(m.Store, r, checkpoint.LoadOptions{Rename: func(n string) string {
		if strings.HasPrefix(n, optPrefix) || strings.HasPrefix(n, emaPrefix) {
			return ""
		}
		return n
	}}); err != nil {
		return m, err
	}
	t.m, t.st = m, st
	t.noise = diffusion.NewNoise(0)
	if err := t.noise.UnmarshalBinary(st.Noise); err != nil {
		return m, fmt.Errorf("noise state: %w", err)
	}
	if st.Stage == StageDone {
		return m, nil
	}
	if err := t.restoreOptimizer(r, dev); err != nil {
		return m, err
	}
	if st.Stage == StageDenoiser && t.cfg.EMADecay > 0 {
		return m, t.restoreAverage(r, dev)
	}
	return m, nil
}

// restoreOptimizer makes the current stage's optimizer (t.opt) and loads
// its moments and step from the checkpoint.
func (t *trainer) restoreOptimizer(r checkpoint.Reader, dev gotch.Device) error {
	freeze, ocfg, err := t.cfg.stageTraining(t.st.Stage)
	if err != nil {
		return err
	}
	t.m.SetFreeze(freeze)
	if t.opt, err = optim.NewAdamW(t.m.Store.Trainable(), ocfg); err != nil {
		return err
	}
	saved, err := loadPrefixed(r, optPrefix, dev)
	if err != nil {
		return err
	}
	defer dropAll(saved)
	raw := r.Metadata()["diad.optimizer_step"]
	step, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return fmt.Errorf("optimizer step %q: %w", raw, err)
	}
	return t.opt.LoadState(saved, step)
}

// restoreAverage makes the denoiser's weight average (t.ema) and loads it
// from the checkpoint.
func (t *trainer) restoreAverage(r checkpoint.Reader, dev gotch.Device) error {
	t.ema = newEMA(t.m.Store.Trainable(), t.cfg.EMADecay)
	avg, err := loadPrefixed(r, emaPrefix, dev)
	if err != nil {
		return err
	}
	defer dropAll(avg)
	if err := t.ema.load(avg); err != nil {
		return err
	}
	t.ema.Updates = t.st.EMAUpdates
	return nil
}

// loadPrefixed loads the checkpoint's tensors whose names start with prefix,
// keyed by the rest of the name; on an error it frees those it loaded.
func loadPrefixed(r checkpoint.Reader, prefix string, dev gotch.Device) (map[string]*ts.Tensor, error) {
	out := map[string]*ts.Tensor{}
	for _, e := range r.Entries() {
		name, ok := strings.CutPrefix(e.Name, prefix)
		if !ok {
			continue
		}
		v, err := r.Load(e.Name, dev)
		if err != nil {
			dropAll(out)
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

// dropAll frees every tensor of m.
func dropAll(m map[string]*ts.Tensor) {
	for _, v := range m {
		v.MustDrop()
	}
}
