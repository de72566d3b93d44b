package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// demoData is the synthetic dataset's folder inside DataDir.
const demoData = "demo-data"

// demoSynthDir is the synthetic set inside demoData: the demo model's size
// (128 px, all six categories, seed 1 - the set the committed model was
// measured on). The quick training resizes it to the tiny model's 64 px.
const demoSynthDir = "synth-128"

var demoSynth = datasets.DefaultSynth

// DemoRunDir is the folder next to a committed demo model that holds its
// evaluation on the demo dataset (a results store with one run), installed on
// first start so that the gallery shows a trained model at once.
const DemoRunDir = "runs"

// startDemo prepares the demo: the dataset; the committed demo model, loaded
// at once with its evaluation run; and the quick training of the tiny model
// as a live demonstration of the training monitor (it never replaces the
// demo model). Without a usable demo model the quick training's model is
// the one the user meets, and a notice says why.
func (s *Server) startDemo() error {
	root := filepath.Join(s.cfg.DataDir, demoData, demoSynthDir)
	if _, err := os.Stat(root); err != nil {
		s.log.Info("demo: generating the synthetic dataset", "root", root)
		if _, err := datasets.Synthesize(root, demoSynth); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if _, code, err := s.RegisterDataset(shared.RegisterDataset{Name: "synth", Path: root}); err != nil {
		return fmt.Errorf("demo: register dataset (%d): %w", code, err)
	}
	if s.cfg.DemoModel != "" {
		if err := s.startDemoModel(root); err != nil {
			s.addNotice(fmt.Sprintf("The demo model could not be used (%v); the quick training below trains a small model instead.", err))
			s.log.Warn("demo: falling back to the quick training", "model", s.cfg.DemoModel, "err", err)
		}
	}
	for _, j := range s.runner.List() {
		if j.Kind == shared.JobTrain && j.State != shared.JobFailed && j.State != shared.JobCancelled {
			return nil // already trained or training (e.g. queued before a restart)
		}
	}
	if s.loadedModel() == "" && len(s.modelFiles()) > 0 {
		return nil // a model exists already
	}
	j, err := s.runner.Submit(shared.JobTrain, map[string]any{"data": map[string]any{"root": "synth"}, "demo": true})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	s.log.Info("demo: training the tiny model on the synthetic dataset (a few minutes on 2 cores)", "job", j.ID)
	return nil
}

// startDemoModel checks and loads the committed demo model and installs its
// evaluation run (or queues one when none ships with it).
func (s *Server) startDemoModel(root string) error {
	path, err := filepath.Abs(s.cfg.DemoModel)
	if err != nil {
		return err
	}
	if err := checkDemoModel(path); err != nil {
		return err
	}
	s.mu.Lock()
	s.demoModel = path
	s.mu.Unlock()
	if err := s.useModel(path); err != nil {
		s.mu.Lock()
		s.demoModel = ""
		s.mu.Unlock()
		return err
	}
	s.log.Info("demo: serving the demo model", "model", path)
	installed, err := s.installDemoRun(path, root)
	if err != nil {
		s.log.Warn("demo: the committed evaluation run could not be installed; evaluating now", "err", err)
	}
	if installed {
		return nil
	}
	if err == nil && s.hasRunOf(path) {
		return nil
	}
	j, err := s.runner.Submit(shared.JobTest, map[string]any{"checkpoint": path, "data": map[string]any{"root": "synth"}})
	if err != nil {
		return err
	}
	s.log.Info("demo: evaluating the demo model", "job", j.ID)
	return nil
}

// checkDemoModel refuses a missing or corrupt file and any preset but demo.
func checkDemoModel(path string) error {
	preset, err := evaluate.CheckpointPreset(path)
	if err != nil {
		return err
	}
	if preset != "demo" {
		return fmt.Errorf("%s is preset %q, not demo", path, preset)
	}
	return nil
}

// hasRunOf reports whether the results store holds a run of checkpoint.
func (s *Server) hasRunOf(checkpoint string) bool {
	runs, err := s.store.Runs()
	if err != nil {
		return false
	}
	for _, r := range runs {
		if r.Checkpoint == checkpoint {
			return true
		}
	}
	return false
}

// installDemoRun copies the run committed beside the demo model into the
// results store, with its image paths moved to this server's copy of the
// demo dataset (the set is generated from a seed, so the files are the same).
// It returns the run's threshold and whether it installed one now.
func (s *Server) installDemoRun(modelPath, root string) (bool, error) {
	src := results.Store{Root: filepath.Join(filepath.Dir(modelPath), DemoRunDir)}
	runs, err := src.Runs()
	if err != nil {
		return false, err
	}
	if len(runs) == 0 {
		return false, nil
	}
	meta := runs[0]
	if old, err := s.store.Meta(meta.RunID); err == nil {
		// Installed by an earlier start - with another data folder, its
		// paths point there: move them to this server's copy.
		if old.Dataset.Root != root {
			if err := s.store.Relocate(meta.RunID, root); err != nil {
				return false, err
			}
			s.log.Info("demo: the demo run's images moved to this data folder", "run", meta.RunID, "root", root)
		}
		return false, nil
	}
	images, err := src.Images(meta.RunID)
	if err != nil {
		return false, err
	}
	metricRows, err := src.Metrics(meta.RunID)
	if err != nil {
		return false, err
	}
	maps, err := src.Maps(meta.RunID)
	if err != nil {
		return false, err
	}
	for i := range images {
		rel, err := filepath.Rel(meta.Dataset.Root, images[i].Path)
		if err != nil || strings.HasPrefix(rel, "..") {
			return false, fmt.Errorf("demo run %s: image %s is outside its dataset %s", meta.RunID, images[i].Path, meta.Dataset.Root)
		}
		images[i].Path = filepath.Join(root, rel)
	}
	meta.Dataset.Root = root
	meta.Checkpoint = modelPath
	if err := s.store.Write(results.Run{Meta: meta, Images: images, Metrics: metricRows, Maps: maps}); err != nil {
		return false, err
	}
	s.log.Info("demo: installed the demo model's evaluation run", "run", meta.RunID)
	return true, nil
}

// afterDemoTrain queues the evaluation of a freshly trained demo model.
func (s *Server) afterDemoTrain(model string) {
	j, err := s.runner.Submit(shared.JobTest, map[string]any{"checkpoint": model, "data": map[string]any{"root": "synth"}})
	if err != nil {
		s.log.Warn("demo: queue evaluation", "err", err)
		return
	}
	s.log.Info("demo: evaluating the trained model", "job", j.ID)
}
