package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestVersionReportsLibtorchAndDevices(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"diad", "gotch     0.9.1", "libtorch  " + torchrt.LibtorchVersion(), "devices   cpu"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r buildReport
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Libtorch == "" || r.Gotch != "0.9.1" {
		t.Fatalf("json version %q: %v", out, err)
	}
}

func TestUnknownCommandFails(t *testing.T) {
	if _, err := runCLI(t, "frobnicate"); err == nil {
		t.Fatal("unknown command accepted")
	}
}

func TestInspectRecognisesPreset(t *testing.T) {
	m, err := model.New(model.TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "inspect", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "preset tiny") || !regexp.MustCompile(`tiny\s+autoencoder,unet,sg \(exact\)`).MatchString(out) {
		t.Fatalf("inspect output:\n%s", out)
	}
	out, err = runCLI(t, "inspect", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Tensors != len(m.Store.Params()) {
		t.Fatalf("json: %v %+v", err, rep)
	}
	if _, err := runCLI(t, "inspect", filepath.Join(t.TempDir(), "absent.safetensors")); err == nil {
		t.Fatal("absent file accepted")
	}
}
