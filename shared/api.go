package shared

import (
	"math"
	"time"
)

// APIError is every error response's body.
type APIError struct {
	Error string `json:"error"`
}

// Job kinds and states.
const (
	JobTrain   = "train"
	JobTest    = "test"
	JobPredict = "predict"

	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// JobRequest starts a job. Config holds the job kind's settings: for train,
// keys of the training config (data, preset, max_steps, ...); for test and
// predict, checkpoint, data, threshold, paths.
type JobRequest struct {
	Kind   string         `json:"kind"`
	Config map[string]any `json:"config"`
}

// JobProgress is the latest progress of a job.
type JobProgress struct {
	Stage        string  `json:"stage,omitempty"`
	Step         int     `json:"step"`
	Total        int     `json:"total"`
	Loss         float64 `json:"loss,omitempty"`
	ValLoss      float64 `json:"val_loss,omitempty"`
	ImagesPerSec float64 `json:"images_per_sec,omitempty"`
	ETASeconds   float64 `json:"eta_seconds,omitempty"`
}

// Finite is p with every non-finite number (a diverged loss, an unknown
// ETA) set to 0, the value JSON omits: JSON has no NaN or infinity, so a
// record or event holding one could not be written.
func (p JobProgress) Finite() JobProgress {
	for _, f := range []*float64{&p.Loss, &p.ValLoss, &p.ImagesPerSec, &p.ETASeconds} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = 0
		}
	}
	return p
}

// Job is a job's record.
type Job struct {
	ID       string         `json:"id"`
	Kind     string         `json:"kind"`
	State    string         `json:"state"`
	Error    string         `json:"error,omitempty"`
	Config   map[string]any `json:"config"`
	Created  time.Time      `json:"created"`
	Started  *time.Time     `json:"started,omitempty"`
	Finished *time.Time     `json:"finished,omitempty"`
	Progress JobProgress    `json:"progress"`
	// Output: the model file of a train job, the run id of test/predict.
	Model string `json:"model,omitempty"`
	RunID string `json:"run_id,omitempty"`
}

// JobEvent is streamed on /api/v1/ws/jobs/{id}.
type JobEvent struct {
	Type  string    `json:"type"` // "job"
	Job   string    `json:"job"`
	Kind  string    `json:"kind"` // step, validation, checkpoint, stage, state, done
	Time  time.Time `json:"time"`
	State string    `json:"state"`
	JobProgress
	Message string `json:"message,omitempty"`
}

// Dataset is a registered dataset.
type Dataset struct {
	Name       string   `json:"name"`
	Root       string   `json:"root"`
	Layout     string   `json:"layout"`
	Categories []string `json:"categories"`
	Train      int      `json:"train"`
	Test       int      `json:"test"`
}

// RegisterDataset asks the server to index a folder within its data roots.
type RegisterDataset struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Layout string `json:"layout,omitempty"`
}

// Upload is an uploaded image for ad-hoc inspection.
type Upload struct {
	ID     string `json:"id"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Format string `json:"format"`
	Bytes  int    `json:"bytes"`
}

// Model is a checkpoint the server can load.
type Model struct {
	Name       string           `json:"name"`
	Path       string           `json:"path"`
	Preset     string           `json:"preset"`
	Parameters map[string]int64 `json:"parameters"`
	Loaded     bool             `json:"loaded"`
	// Error says why the file cannot be used (corrupt, not a checkpoint);
	// such files are listed so that nobody wonders where a model went.
	Error string `json:"error,omitempty"`
}

// ImagePage is one page of a run's images.
type ImagePage struct {
	Total  int         `json:"total"`
	Offset int         `json:"offset"`
	Images []ImageInfo `json:"images"`
}

// ImageInfo is an image row as the API shows it.
type ImageInfo struct {
	ImageID      int64      `json:"image_id"`
	Category     string     `json:"category"`
	Path         string     `json:"path"`
	Defect       string     `json:"defect"`
	GroundTruth  int32      `json:"gt_label"`
	Score        float64    `json:"score"`
	Scorer       string     `json:"scorer,omitempty"` // the anomaly map's terms, e.g. ae+ssim
	StepScores   []float64  `json:"step_scores,omitempty"`
	Threshold    float64    `json:"threshold"`
	Predicted    int32      `json:"predicted_label"`
	AnalystLabel string     `json:"analyst_label"`
	AnalystNote  string     `json:"analyst_note"`
	AnalystUser  string     `json:"analyst_user"`
	AnalystTime  *time.Time `json:"analyst_time,omitempty"`
}

// LabelRequest sets an analyst verdict.
type LabelRequest struct {
	Verdict string `json:"verdict"` // normal, anomalous, unsure, "" clears
	Note    string `json:"note"`
	User    string `json:"user"`
}

// ThresholdRequest sets a run's decision threshold.
type ThresholdRequest struct {
	Value  float64 `json:"value"`
	Policy string  `json:"policy"` // manual, max-f1, fpr<=x, fnr<=x
	User   string  `json:"user"`
}

// RunThreshold is a run's decision threshold and how it was chosen.
type RunThreshold struct {
	Value  float64 `json:"value"`
	Policy string  `json:"policy"` // manual, max-f1, fpr<=x, fnr<=x
	SetBy  string  `json:"set_by,omitempty"`
}

// RunInfo is what a client needs of a results run (GET /runs, /runs/{run}):
// the subset of the server's run record that the browser shows.
type RunInfo struct {
	RunID      string       `json:"run_id"`
	Kind       string       `json:"kind"` // test or predict
	CreatedAt  time.Time    `json:"created_at"`
	Preset     string       `json:"preset"`
	Checkpoint string       `json:"checkpoint"`
	Scorer     string       `json:"scorer,omitempty"`
	Threshold  RunThreshold `json:"threshold"`
	Dataset    struct {
		Root       string   `json:"root"`
		Categories []string `json:"categories"`
	} `json:"dataset"`
}

// MetricValue is one row of GET /runs/{run}/metrics (Value is null when the
// metric is undefined for the category, with Error saying why).
type MetricValue struct {
	Category string   `json:"category"`
	Metric   string   `json:"metric"`
	Value    *float64 `json:"value"`
	Error    string   `json:"error,omitempty"`
}

// ServerStatus is the part of GET /api/v1/status the client shows: the model
// it serves and notices for the user (e.g. why the demo model is not in use).
type ServerStatus struct {
	Model   string   `json:"model,omitempty"`
	Notices []string `json:"notices,omitempty"`
}

// Predicted is the decision rule everywhere (server, CLI, client): an image
// is predicted anomalous when its score reaches the threshold.
func Predicted(score, threshold float64) bool { return score >= threshold }
