package shared

import (
	"fmt"
	"math"
	"sort"
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

// Job event kinds (JobEvent.Kind).
const (
	EventState       = "state"       // the job's state changed (the last event is one)
	EventStep        = "step"        // progress
	EventStage       = "stage"       // a training stage began; Message says which
	EventValidation  = "validation"  // a validation loss
	EventCheckpoint  = "checkpoint"  // a checkpoint was written; Message is its path
	EventCalibration = "calibration" // one calibration candidate's result
	EventDone        = "done"        // training finished; Message says why
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

// Label actions of a BulkLabelRequest and of the label history.
const (
	LabelActionSet  = "set"  // one image's label (PUT .../images/{image}/label)
	LabelActionBulk = "bulk" // one verdict for a selection of images
	LabelActionUndo = "undo" // labels put back as they were before a bulk action
)

// BulkLabelRequest sets the labels of many images of a run at once
// (PUT /api/v1/runs/{run}/labels): one verdict for a range or a filtered
// view (action bulk), or what a bulk action replaced (action undo).
type BulkLabelRequest struct {
	Labels []ImageLabel `json:"labels"`
	User   string       `json:"user"`
	Action string       `json:"action"`
}

// ImageLabel is one image's label in a BulkLabelRequest.
type ImageLabel struct {
	ImageID int64  `json:"image_id"`
	Verdict string `json:"verdict"` // normal, anomalous, unsure, "" clears
	Note    string `json:"note"`
}

// LabelChange is one entry of a run's label history
// (GET /api/v1/runs/{run}/labels/history): who changed which image's
// label, when, from what to what, by which action.
type LabelChange struct {
	ImageID     int64     `json:"image_id"`
	Time        time.Time `json:"time"`
	User        string    `json:"user"`
	Action      string    `json:"action"`
	FromVerdict string    `json:"from_verdict"`
	ToVerdict   string    `json:"to_verdict"`
	FromNote    string    `json:"from_note"`
	ToNote      string    `json:"to_note"`
}

// ThresholdRequest sets a run's decision threshold: Value for every image,
// or, where PerCategory names the image's category, that category's value.
type ThresholdRequest struct {
	Value       float64            `json:"value"`
	PerCategory map[string]float64 `json:"per_category,omitempty"`
	Policy      string             `json:"policy"` // manual, max-f1, fpr<=x, fnr<=x
	User        string             `json:"user"`
}

// RunThreshold is a run's decision threshold and how it was chosen. A
// multi-class run mixes categories whose scores lie in different ranges, so
// a category may have its own threshold (PerCategory); the others use Value.
type RunThreshold struct {
	Value       float64            `json:"value"`
	PerCategory map[string]float64 `json:"per_category,omitempty"`
	Policy      string             `json:"policy"` // manual, max-f1, fpr<=x, fnr<=x
	SetBy       string             `json:"set_by,omitempty"`
}

// String is the threshold as the CLI prints it: "0.5 (max-f1)", followed
// by each category's own value, in name order.
func (t RunThreshold) String() string {
	s := fmt.Sprintf("%.6g (%s)", t.Value, t.Policy)
	if len(t.PerCategory) == 0 {
		return s
	}
	cats := make([]string, 0, len(t.PerCategory))
	for c := range t.PerCategory {
		cats = append(cats, c)
	}
	sort.Strings(cats)
	for i, c := range cats {
		sep := ", "
		if i == 0 {
			sep = "; per category: "
		}
		s += fmt.Sprintf("%s%s %.6g", sep, c, t.PerCategory[c])
	}
	return s
}

// For is the threshold an image of the category is judged by.
func (t RunThreshold) For(category string) float64 {
	if v, ok := t.PerCategory[category]; ok {
		return v
	}
	return t.Value
}

// RunInfo is a results run's record: its run.json on disk (the results
// store's RunMeta is this type) and the body of GET /runs and /runs/{run}.
type RunInfo struct {
	SchemaVersion int        `json:"schema_version"`
	RunID         string     `json:"run_id"`
	Kind          string     `json:"kind"` // test or predict
	CreatedAt     time.Time  `json:"created_at"`
	Preset        string     `json:"preset"`
	Checkpoint    string     `json:"checkpoint"`
	CheckpointSHA string     `json:"checkpoint_sha256"`
	Dataset       RunDataset `json:"dataset"`
	// Seed is the run's noise seed; with Sampler and ImageSeed-style
	// per-image seeds it replays any image exactly.
	Seed      uint64             `json:"seed"`
	Threshold RunThreshold       `json:"threshold"`
	Versions  map[string]string  `json:"versions"`
	Device    string             `json:"device"`
	Timings   map[string]float64 `json:"timings_seconds"`
	Config    any                `json:"config,omitempty"`
	// Scorer names the anomaly map's terms (e.g. "resnet", "ae+ssim").
	Scorer string `json:"scorer"`
	// Sampler is the sampler the images were reconstructed with (nil in
	// runs made before it was recorded).
	Sampler *SamplerConfig `json:"sampler,omitempty"`
	// Files holds the SHA-256 of each Parquet file, verified when it is
	// read, so that a damaged file is reported as corruption (absent in
	// runs made before it was recorded).
	Files    map[string]string `json:"files,omitempty"`
	Features RunFeatures       `json:"features"`
	// BatchInvariant says each image was computed alone inside its batch,
	// so its map does not depend on its batch (sharded runs always are).
	BatchInvariant bool `json:"batch_invariant,omitempty"`
	// Shards is the number of shards a merged run was made from (0: one
	// process).
	Shards int `json:"shards,omitempty"`
}

// RunDataset is the dataset a run scored.
type RunDataset struct {
	Root       string   `json:"root"`
	Layout     string   `json:"layout"`
	Categories []string `json:"categories"`
}

// RunFeatures is the feature extractor of a run's ResNet map.
type RunFeatures struct {
	Arch       string `json:"arch"`
	Pretrained bool   `json:"pretrained"`
	Weights    string `json:"weights,omitempty"`
}

// MetricValue is one row of GET /runs/{run}/metrics (Value is null when the
// metric is undefined for the category, with Error saying why).
type MetricValue struct {
	Category string   `json:"category"`
	Metric   string   `json:"metric"`
	Value    *float64 `json:"value"`
	Error    string   `json:"error,omitempty"`
}

// Status is the body of GET /api/v1/status.
type Status struct {
	Version  VersionInfo `json:"version"`
	Libtorch string      `json:"libtorch"`
	Devices  []string    `json:"devices"`
	Threads  int         `json:"threads"`
	Started  time.Time   `json:"started"`
	Model    string      `json:"model,omitempty"`
	// Notices are things the user should know about this server (e.g. that
	// the demo model could not be loaded), shown by the client.
	Notices []string `json:"notices,omitempty"`
}

// VersionInfo identifies a diad build.
type VersionInfo struct {
	Diad     string `json:"diad"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Gotch    string `json:"gotch"`
}

// LoadModelRequest is the body of POST /api/v1/models/load.
type LoadModelRequest struct {
	Path string `json:"path"`
}

// Predicted is the decision rule everywhere (server, CLI, client): an image
// is predicted anomalous when its score reaches the threshold.
func Predicted(score, threshold float64) bool { return score >= threshold }
