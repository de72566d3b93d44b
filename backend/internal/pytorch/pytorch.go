// Package pytorch runs small PyTorch scripts from tests, to produce files in
// PyTorch's own formats (torch.save pickles, torchvision key layouts) and
// reference numbers. Debian's python3-torch is in diad's build root; elsewhere
// the tests that need it are skipped unless DIAD_TORCH_MODE=root says it must
// be there.
package pytorch

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// Run executes script with python3 and returns its standard output. It skips
// the test when PyTorch is unavailable outside the build root.
func Run(t testing.TB, script string, args ...string) []byte {
	t.Helper()
	Require(t)
	cmd := exec.Command("python3", append([]string{"-c", script}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("python3: %v\n%s", err, errb.String())
	}
	return out.Bytes()
}

// Require skips the test when python3 with torch (and PyYAML) is
// unavailable outside the build root, and fails it inside, where it must be.
func Require(t testing.TB) {
	t.Helper()
	if err := exec.Command("python3", "-c", "import torch, yaml").Run(); err != nil {
		if os.Getenv("DIAD_TORCH_MODE") == "root" {
			t.Fatalf("python3 with torch and yaml is missing from the build root: %v", err)
		}
		t.Skipf("python3 with torch not available: %v", err)
	}
}
