// Package version reports which diad build is running: its own version and the
// versions of the libraries that decide numerical behaviour (gotch, libtorch).
package version

import (
	"github.com/diad-project/diad/shared"
	"runtime/debug"
	"strings"
)

// Version is diad's release version; the Makefile overrides it with
// -ldflags "-X github.com/diad-project/diad/backend/version.Version=...".
var Version = "0.1.0-dev"

// Module paths whose versions matter when reproducing a run.
const gotchModule = "github.com/sugarme/gotch"

// Info is what `diad version` prints and what every result run records.
type Info = shared.VersionInfo

// Read collects Info from the linked binary's build information.
func Read() Info {
	info := Info{Diad: Version, Gotch: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.Go = bi.GoVersion
	for _, dep := range bi.Deps {
		if dep.Path == gotchModule {
			info.Gotch = strings.TrimPrefix(dep.Version, "v")
			if dep.Replace != nil {
				info.Gotch += " (replaced by " + dep.Replace.Path + ")"
			}
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}
