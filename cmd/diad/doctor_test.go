package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/kernelcheck"
)

// diad doctor as a process: the machine, the libraries as loaded and the
// self-check, in text and JSON; exit status 0 when the kernels compute right.
func TestDoctorDescribesTheMachine(t *testing.T) {
	out, code := runMain(t, "doctor", "--json")
	var r struct {
		CPU      string `json:"cpu"`
		Libtorch string `json:"libtorch"`
		OneDNN   string `json:"onednn"`
		BLAS     string `json:"blas"`
		Threads  int    `json:"threads"`
		Check    struct {
			Results []struct {
				Op string `json:"op"`
				OK bool   `json:"ok"`
			} `json:"results"`
		} `json:"check"`
		Fallback *json.RawMessage `json:"fallback"`
		OK       bool             `json:"ok"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	if !strings.Contains(r.CPU, "family") || r.Libtorch == "" || !strings.Contains(r.OneDNN, "oneDNN") || r.Threads < 1 || len(r.Check.Results) < 5 {
		t.Fatalf("doctor --json: %+v", r)
	}
	if (code == 0) != r.OK {
		t.Fatalf("exit %d with ok %v:\n%s", code, r.OK, out)
	}
	if r.Fallback != nil && r.OK {
		t.Fatal("a run that needed the fallback reports ok")
	}
	text, _ := runMain(t, "doctor")
	for _, want := range []string{"cpu ", "libtorch ", "oneDNN ", "BLAS ", "self-check ", "verdict "} {
		if !strings.Contains(text, want) {
			t.Errorf("doctor lacks %q:\n%s", want, text)
		}
	}
}

// With Debian 13's oneDNN loaded, on a CPU where it computes wrong, the
// doctor says so, names the fallback and exits non-zero.
func TestDoctorFailsOnAWrongOneDNN(t *testing.T) {
	const lib = kernelcheck.Debian13OneDNN
	if _, err := os.Stat(filepath.Join(lib, "libdnnl.so.3.6")); err != nil {
		t.Skipf("Debian 13's oneDNN is not kept aside here: %v", err)
	}
	t.Setenv("LD_LIBRARY_PATH", lib)
	out, code := runMain(t, "doctor")
	if !strings.Contains(out, "oneDNN 3.7.") {
		t.Fatalf("the doctor did not load Debian 13's oneDNN:\n%s", out)
	}
	switch {
	case strings.Contains(out, "verdict     ok"):
		if code != 0 {
			t.Fatalf("ok verdict with exit %d", code)
		}
		t.Log("Debian 13's oneDNN computes right on this CPU")
	case strings.Contains(out, "fallback ") && strings.Contains(out, "FAIL conv2d"):
		if code == 0 || strings.Count(out, "oneDNN is switched off") != 1 {
			t.Fatalf("a wrong oneDNN: exit %d\n%s", code, out)
		}
	default:
		t.Fatalf("neither right nor a fallback:\n%s", out)
	}
	t.Setenv(kernelcheck.Env, "sometimes")
	if out, code := runMain(t, "doctor"); code == 0 || !strings.Contains(out, "want auto, on or off") {
		t.Fatalf("a bad %s: exit %d\n%s", kernelcheck.Env, code, out)
	}
}
