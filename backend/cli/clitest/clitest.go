// Package clitest runs a command's real main() in a child process - the
// test binary re-executed, its TestMain calling cli.ServeChild - to see its
// output and exit status.
package clitest

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/diad-project/diad/backend/cli"
)

// RunMain runs the command with args as a child process and returns its
// output and exit code.
func RunMain(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return RunMainEnv(t, nil, args...)
}

// RunMainEnv is RunMain with env added to the child's environment.
func RunMainEnv(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), cli.ChildEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}
