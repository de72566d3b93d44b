// Package hook defines what the browser client shows of itself to tests:
// the JSON returned by window.diadState() in the page. End-to-end tests read
// it (through a real headless browser) instead of guessing from pixels, and
// use the widget rectangles in it to click and drag like a user.
package hook

// Rect is a widget's place on the canvas in CSS pixels: x, y, width, height.
type Rect [4]float64

// Center is the rectangle's middle.
func (r Rect) Center() (x, y float64) { return r[0] + r[2]/2, r[1] + r[3]/2 }

// Confusion is the confusion matrix at the client's threshold.
type Confusion struct {
	TP, FP, TN, FN int
	F1             float64
}

// Trajectory is the denoising trajectory on screen.
type Trajectory struct {
	Image    int64  // -1 for a dropped image
	Upload   string // upload id of a dropped image
	T0       int    // the level the input was noised to ("noise t0")
	Total    int
	Received int
	Cursor   int
	Playing  bool
	Complete bool
	Score    float64 // final image score (NaN-free: 0 before the final frame)
	// MaxCursor is the highest step shown since the trajectory started;
	// Played counts cursor moves made by playback (not by following).
	MaxCursor int
	Played    int
	// Failed is the server's error when the trajectory could not run.
	Failed string
	// StepMS is how long playback shows a step (the speed control).
	StepMS int
	// Pictured counts the steps whose pictures are decoded (shown steps at
	// once, the others while the page is idle).
	Pictured int
	// The noise schedule panel: how many points of sqrt(abar_t) came, the
	// step t it highlights (the cursor's) and the signal and noise shares
	// there (0 before the schedule came).
	SchedulePoints int
	HighlightT     int
	Signal, Noise  float64
	// Compare is the second trajectory shown beside this one.
	Compare Comparison
}

// Comparison is the explorer's second trajectory: the same image, seed
// and start level with the SG network off or another sampler.
type Comparison struct {
	Mode     string // "" (none), no_sg, ddpm50, dpm10, ddim10
	Guidance string // the variant its frames say they belong to
	T0       int    // its start level
	Total    int
	Received int
	Complete bool
	// Cursor is its step shown beside the explorer's cursor (same noise
	// level), CursorT that step's t; -1 and 0 before one arrived.
	Cursor  int
	CursorT int
	Score   float64 // final score (0 before the final frame)
	Scores  int     // per-step scores drawn on the chart
	Failed  string
}

// Job is a job as the training monitor shows it.
type Job struct {
	ID, Kind, State string
	Error           string // why a failed job failed
	Step, Total     int
	LossPoints      int // step events with a loss received over the websocket
	Events          int
	Series          []string // the loss chart's series: one per training stage, in order
}

// ScoreFilter is the gallery's score range, clipped to the run's scores.
type ScoreFilter struct {
	Limited  bool // a bound is set
	Min, Max float64
}

// State is the client's state.
type State struct {
	Ready       bool // first frame drawn
	Connected   bool // denoise websocket open (hello received)
	Server      string
	Reconnects  int
	Width       int
	Height      int
	DPR         float64 // device pixels per CSS pixel the client renders at (Width and Height are CSS pixels)
	Tab         string
	Run         string
	Runs        int
	Images      int
	Visible     int
	ScoreFilter ScoreFilter
	Columns     int
	Selected    int64
	Verdict     string // analyst verdict of the selected image
	// Range is how many images the selection holds (shift+click, shift+j/k):
	// verdict keys apply to all of them. BulkSaved counts the images the
	// last bulk verdict or undo saved; Undo says what z would put back.
	Range     int
	BulkSaved int
	Undo      string
	Note      string
	Editing   bool // typing a note
	// Threshold and Policy are the threshold view's shown threshold (the
	// pooled one, or Scope's); with PerCategory each category is judged by
	// its own (CategoryThresholds), Scope "" is every category.
	Threshold          float64
	Policy             string
	PerCategory        bool
	Scope              string
	CategoryThresholds map[string]float64
	Saved              string // threshold policy saved with the run
	SavedPerCategory   int    // how many categories the saved threshold names
	Confusion          Confusion
	// AUROC and AP are the threshold view's curve areas over all images
	// pooled (0 when undefined); Metrics counts the run metrics values the
	// view's table was given.
	AUROC, AP   float64
	Metrics     int
	Scale       string // heatmap colour scale: threshold or minmax
	Latent      string // latent panels: rgb (projection) or channels
	Captions    bool   // one-line captions under the explorer's panels
	Presenter   bool   // presenter mode: the explorer alone, drawn larger
	Trajectory  Trajectory
	Jobs        []Job
	SelectedJob string   // shown in the training monitor
	Disabled    []string // widgets shown but not clickable yet (e.g. exports without a run)
	Exported    int      // rows the last export asked for
	// TrajectoryExport is the link the last trajectory export (GIF or
	// strip) downloaded.
	TrajectoryExport string
	// LabelsPushed counts images updated from the change feed (labels set
	// elsewhere); FeedError is why the feed is down ("" when up).
	LabelsPushed int
	FeedError    string
	LossLog      bool    // the loss chart's scale is logarithmic
	LossSmooth   float64 // the loss chart's smoothing weight
	StepMillis   int64   // the explorer's playback speed, ms per step
	Status       string  // status line
	Errors       []string
	FPS          float64 // ebiten.ActualFPS
	Frames       int64   // frames drawn whole
	// Partials counts frames that repainted only the regions that changed
	// (the scrolled grid, the explorer's playing panels; the status bar).
	Partials int64
	Pending  int // image decodes in flight
	// WorkMS is the page's Go time so far per kind of work, in ms:
	// "update" (the frame loop's Update, streamed frames included), "draw"
	// (issuing the drawing, not the browser's rendering of it), "frames"
	// (storing streamed frames), "latents" (decoding raw latents). PNG
	// pictures are decoded by the browser (createImageBitmap), off this
	// thread, and are not counted.
	WorkMS map[string]float64 `json:",omitempty"`
	// Thumbs is how many thumbnail textures the gallery keeps, ThumbsLoading
	// how many it is fetching; GoHeapMB and GoSysMB are the client's Go heap
	// in use and all memory its runtime holds (the WebAssembly memory), in MB.
	Thumbs, ThumbsLoading, ThumbCache int     // ThumbCache: the most it keeps
	GalleryScroll                     float64 // how far the gallery is scrolled, px
	// Overlay is the gallery's overlay (off, heatmap, mask, both), Overlays
	// the overlay pictures drawn, OverlayMasks the images whose
	// ground-truth mask came.
	Overlay           string
	Overlays          int
	OverlayMasks      int
	GoHeapMB, GoSysMB float64
	Widgets           map[string]Rect
}
