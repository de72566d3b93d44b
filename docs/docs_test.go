package docs

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository's top folder (this package's parent).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// stretch is the word for a stretch of work, spelt in parts so that this
// file does not itself contain what it forbids.
const stretch = "ses" + "sion"

// history matches words about how the project was built: stretches of work
// and issue numbers belong in git's history and the issue tracker, not in
// what users and the next engineer read.
var history = regexp.MustCompile(`\b[Ss]` + stretch[1:] + `s? \d+|\b[Ii]ssues? #?\d+|#\d+'s\b|\bfirst ` + stretch + `s\b|\bthis ` + stretch + `\b`)

// textFile reports whether a tracked file is text the project writes
// (documents, code, scripts, configs), not data or another project's code.
func textFile(path string) bool {
	// Another project's code kept in the repository speaks its own way;
	// the notes on how it was changed are the project's.
	if strings.HasPrefix(path, "third_party/gotch/") && filepath.Base(path) != "PATCHES.md" {
		return false
	}
	switch filepath.Ext(path) {
	case ".md", ".go", ".sh", ".yaml", ".yml", ".txt", ".h", ".cpp", ".html", ".js", ".sbatch":
		return !strings.Contains(path, "/testdata/")
	}
	base := filepath.Base(path)
	return base == "Makefile" || base == "Containerfile" || base == "run"
}

// No tracked text file speaks of stretches of work or issue numbers.
func TestNoBuildHistoryInTrackedText(t *testing.T) {
	root := repoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): nothing to check", err)
	}
	checked := 0
	for _, path := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !textFile(path) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for i, line := range bytes.Split(b, []byte("\n")) {
			if m := history.Find(line); m != nil {
				t.Errorf("%s:%d speaks of how the project was built (%q): %s", path, i+1, m, bytes.TrimSpace(line))
			}
		}
	}
	if checked < 50 {
		t.Fatalf("checked only %d tracked text files", checked)
	}
}

func TestHistoryPattern(t *testing.T) {
	for _, s := range []string{"since " + stretch + " 13", "S" + stretch[1:] + "s 12", "iss" + "ue #" + "11's targets", "#" + "14's goal", "in the first " + stretch + "s"} {
		if !history.MatchString(s) {
			t.Errorf("%q is not caught", s)
		}
	}
	for _, s := range []string{"fmt.Sprint(x)", "a websocket " + stretch, "see issue tracker", "step 13"} {
		if history.MatchString(s) {
			t.Errorf("%q is caught", s)
		}
	}
}

// pkg is what go list says of a package.
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func goList(t *testing.T, env []string, patterns ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, patterns...)...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", patterns, err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %v listed nothing", patterns)
	}
	return pkgs
}

const module = "github.com/diad-project/diad/"

// The import rules ARCHITECTURE.md states.
func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	for _, p := range goList(t, nil, "./shared/...") {
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module) && !strings.HasPrefix(imp, module+"shared") {
				t.Errorf("%s imports %s: shared imports nothing of diad", p.ImportPath, imp)
			}
		}
	}
	for _, p := range goList(t, nil, "./...") {
		for _, imp := range p.Imports {
			if imp == module+"backend/server" && p.ImportPath != module+"cmd/diad" && !strings.HasPrefix(p.ImportPath, module+"backend/server") {
				t.Errorf("%s imports backend/server: only cmd/diad may", p.ImportPath)
			}
		}
	}
	allowed := []string{module + "shared", module + "frontend-wasm/", module + "backend/visual", module + "backend/metrics"}
	for _, p := range goList(t, []string{"GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0"}, "./frontend-wasm/...", "./cmd/diad-web") {
		if p.ImportPath == module+"frontend-wasm/e2e" {
			continue // the browser test runs on the host and starts a real server
		}
		for _, dep := range p.Deps {
			if strings.Contains(dep, "github.com/sugarme/gotch") {
				t.Errorf("%s depends on %s: the browser client never links libtorch", p.ImportPath, dep)
			}
			if !strings.HasPrefix(dep, module) {
				continue
			}
			ok := false
			for _, a := range allowed {
				ok = ok || dep == strings.TrimSuffix(a, "/") || strings.HasPrefix(dep, a)
			}
			if !ok {
				t.Errorf("%s depends on %s: the client imports shared, its own packages, backend/visual and backend/metrics", p.ImportPath, dep)
			}
		}
	}
}
