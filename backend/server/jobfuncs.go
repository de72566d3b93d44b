package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/jobs"
	"github.com/diad-project/diad/backend/train"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// overlay decodes a job's config map over base (keys as in the YAML configs).
// Unknown keys are refused: a misspelt setting must not silently do nothing.
func overlay(base any, config map[string]any) error {
	b, err := yaml.Marshal(config)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(base); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("job config: %w", err)
	}
	return nil
}

// trainConfig builds a train job's config: the cpu base, the client's keys,
// and the server's choices (output folder; data confined to the roots).
func (s *Server) trainConfig(job shared.Job) (train.Config, error) {
	cfg := train.CPUConfig()
	conf := map[string]any{}
	for k, v := range job.Config {
		if k != "demo" { // the server's own marker, not a training setting
			conf[k] = v
		}
	}
	if err := overlay(&cfg, conf); err != nil {
		return cfg, err
	}
	if err := s.confineSource(&cfg.Data); err != nil {
		return cfg, err
	}
	var err error
	for _, p := range []*string{&cfg.InitFrom, &cfg.InitWeights, &cfg.Autoencoder, &cfg.ModelConfig} {
		if *p != "" {
			if *p, err = confine(s.cfg.DataRoots, *p); err != nil {
				return cfg, err
			}
		}
	}
	cfg.OutDir = filepath.Join(s.cfg.DataDir, "models", job.ID)
	if cfg.Device == "" || cfg.Device == "cpu" {
		cfg.Device = s.cfg.Device
	}
	return cfg, cfg.Validate()
}

// confineSource resolves a job's dataset: a registered name or a folder
// within the roots, and a split file (VisA's CSV) within the roots too.
func (s *Server) confineSource(src *datasets.Source) error {
	root, err := s.datasetRoot(src.Root)
	if err != nil {
		return err
	}
	src.Root = root
	if src.CSV != "" {
		if src.CSV, err = confine(s.cfg.DataRoots, src.CSV); err != nil {
			return fmt.Errorf("data.csv: %w", err)
		}
	}
	return nil
}

// datasetRoot resolves a registered dataset name or a path within the roots.
func (s *Server) datasetRoot(name string) (string, error) {
	s.mu.Lock()
	d, ok := s.datasets[name]
	s.mu.Unlock()
	if ok {
		return d.info.Root, nil
	}
	return confine(s.cfg.DataRoots, name)
}

func (s *Server) checkpointPath(p string) (string, error) {
	for _, f := range s.modelFiles() {
		if f == p {
			return p, nil
		}
	}
	return confine(append([]string{filepath.Join(s.cfg.DataDir, "models")}, s.cfg.DataRoots...), p)
}

func (s *Server) evalConfig(job shared.Job) (evaluate.Config, []string, error) {
	cfg := evaluate.DefaultConfig()
	cfg.Features = s.cfg.Features
	cfg.Device = s.cfg.Device
	var extra struct {
		Paths   []string `yaml:"paths"`
		Uploads []string `yaml:"uploads"`
	}
	// paths and uploads name predict's inputs; the rest is evaluate.Config.
	rest, inputs := map[string]any{}, map[string]any{}
	for k, v := range job.Config {
		if k == "paths" || k == "uploads" {
			inputs[k] = v
		} else {
			rest[k] = v
		}
	}
	if err := overlay(&cfg, rest); err != nil {
		return cfg, nil, err
	}
	if err := overlay(&extra, inputs); err != nil {
		return cfg, nil, err
	}
	if err := evaluate.CheckThreshold(cfg.Threshold); err != nil {
		return cfg, nil, err
	}
	if cfg.Scorer != "" {
		if err := evaluate.CheckScorer(cfg.Scorer); err != nil {
			return cfg, nil, err
		}
	}
	var err error
	if cfg.Checkpoint == "" {
		// The model the server serves, else the newest trained one.
		cfg.Checkpoint = s.loadedModel()
		if files := s.modelFiles(); cfg.Checkpoint == "" && len(files) > 0 {
			cfg.Checkpoint = files[len(files)-1]
		}
		if cfg.Checkpoint == "" {
			return cfg, nil, fmt.Errorf("no model: train one first or give config.checkpoint")
		}
	}
	if cfg.Checkpoint, err = s.checkpointPath(cfg.Checkpoint); err != nil {
		return cfg, nil, err
	}
	// The sampler changes must fit the model they apply to.
	if err := evaluate.CheckSampler(cfg.Checkpoint, cfg.Sampler); err != nil {
		return cfg, nil, err
	}
	if cfg.Features.Weights != "" {
		if cfg.Features.Weights, err = confine(s.cfg.DataRoots, cfg.Features.Weights); err != nil {
			return cfg, nil, err
		}
	}
	cfg.ResultsDir = s.cfg.ResultsDir
	if job.Kind == shared.JobTest {
		return cfg, nil, s.confineSource(&cfg.Data)
	}
	paths, err := s.predictInputs(extra.Paths, extra.Uploads)
	return cfg, paths, err
}

// predictInputs are the files a predict job scores: paths under the data
// roots and uploads.
func (s *Server) predictInputs(paths, uploads []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		rp, err := confine(s.cfg.DataRoots, p)
		if err != nil {
			return nil, err
		}
		out = append(out, rp)
	}
	for _, u := range uploads {
		rp, err := s.uploadPath(u)
		if err != nil {
			return nil, err
		}
		out = append(out, rp)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("predict needs config.paths or config.uploads")
	}
	return out, nil
}

// checkJob validates a job request before it is queued, so that bad input is
// a 4xx now rather than a failed job later.
func (s *Server) checkJob(req shared.JobRequest) error {
	job := shared.Job{ID: "j-check", Kind: req.Kind, Config: req.Config}
	switch req.Kind {
	case shared.JobTrain:
		_, err := s.trainConfig(job)
		return err
	case shared.JobTest, shared.JobPredict:
		_, _, err := s.evalConfig(job)
		return err
	}
	return fmt.Errorf("job kind %q: want train, test or predict", req.Kind)
}

func (s *Server) jobFuncs() map[string]jobs.Func {
	return map[string]jobs.Func{
		shared.JobTrain: func(ctx context.Context, job shared.Job, report func(shared.JobEvent)) (jobs.Output, error) {
			cfg, err := s.trainConfig(job)
			if err != nil {
				return jobs.Output{}, err
			}
			demo, _ := job.Config["demo"].(bool)
			sum, err := train.Run(ctx, cfg, train.Options{Resume: true, OnEvent: func(e train.Event) {
				report(shared.JobEvent{Kind: e.Kind, Message: e.Message, JobProgress: shared.JobProgress{Stage: e.Stage, Step: e.Step,
					Total: e.TotalSteps, Loss: e.Loss, ValLoss: e.ValLoss, ImagesPerSec: e.ImagesPerSec, ETASeconds: e.ETASeconds}})
			}})
			if err != nil {
				return jobs.Output{}, err
			}
			if sum.Model != "" && s.loadedModel() == "" {
				if err := s.useModel(sum.Model); err != nil {
					s.log.Warn("load trained model", "err", err)
				}
			}
			s.mu.Lock()
			servingDemo := s.demoModel != ""
			s.mu.Unlock()
			if demo && sum.Model != "" && !servingDemo {
				// Only when it is the model the user meets: next to the demo
				// model the quick training is a demonstration of training.
				s.afterDemoTrain(sum.Model)
			}
			return jobs.Output{Model: sum.Model}, nil
		},
		shared.JobTest: func(ctx context.Context, job shared.Job, report func(shared.JobEvent)) (jobs.Output, error) {
			cfg, _, err := s.evalConfig(job)
			if err != nil {
				return jobs.Output{}, err
			}
			rep, err := evaluate.Test(ctx, cfg, func(done, total int) {
				report(shared.JobEvent{Kind: shared.EventStep, JobProgress: shared.JobProgress{Stage: "test", Step: done, Total: total}})
			})
			if err != nil {
				return jobs.Output{}, err
			}
			return jobs.Output{RunID: rep.RunID}, nil
		},
		shared.JobPredict: func(ctx context.Context, job shared.Job, report func(shared.JobEvent)) (jobs.Output, error) {
			cfg, paths, err := s.evalConfig(job)
			if err != nil {
				return jobs.Output{}, err
			}
			if strings.TrimSpace(cfg.Threshold) == "" || cfg.Threshold == "max-f1" {
				kind, err := evaluate.ResolveScorerFor(cfg.Checkpoint, cfg.Scorer, cfg.Features)
				if err != nil {
					return jobs.Output{}, err
				}
				id := evaluate.ScorerIdentity(kind, cfg.Features.Arch, cfg.Features.Weights)
				th, ok, err := s.thresholdFor(cfg.Checkpoint, id)
				if err != nil {
					return jobs.Output{}, err
				}
				if !ok {
					return jobs.Output{}, fmt.Errorf("predict needs config.threshold (no test run of this model with scorer %s yet)", id)
				}
				// Predicted images have no category: the run's pooled value.
				cfg.Threshold = strconv.FormatFloat(th.Value, 'g', -1, 64)
			}
			_, runID, err := evaluate.Predict(ctx, evaluate.PredictConfig{Config: cfg, Store: true}, paths)
			return jobs.Output{RunID: runID}, err
		},
	}
}
