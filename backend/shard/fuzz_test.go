package shard

import (
	"strings"
	"testing"
)

// FuzzParse: any flag value, folder name or environment either parses into
// a valid spec that prints back the same, or is refused - never a panic,
// never an index outside its count.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"3/16", "0/1", "16/16", "-1/4", "a/b", "9999/9999", " 1/2 ", "1/2/3", "shard=0003-of-0016", "shard=0000-of-0000", "99999999999999999999/3"} {
		f.Add(s, "5", "2", "4", "")
	}
	f.Add("", "x", "", "", "")
	f.Add("", "6", "0", "4", "2")
	f.Fuzz(func(t *testing.T, v, id, lo, count, step string) {
		if s, err := Parse(v); err == nil {
			if s.Validate() != nil {
				t.Fatalf("Parse(%q) = %v, invalid", v, s)
			}
			if back, err := Parse(s.String()); err != nil || back != s {
				t.Fatalf("%v does not print back: %v %v", s, back, err)
			}
		}
		if s, ok := ParseDirName(v); ok {
			if s.Validate() != nil || s.DirName() != v {
				t.Fatalf("ParseDirName(%q) = %v", v, s)
			}
		}
		env := map[string]string{EnvSlurmID: id, EnvSlurmMin: lo, EnvSlurmCount: count, EnvSlurmStep: step}
		for _, k8s := range []bool{false, true} {
			if k8s {
				env = map[string]string{EnvK8sIndex: id, EnvCount: count}
			}
			s, found, err := FromEnv(func(k string) string { return env[k] }, 0)
			if err == nil && found && s.Validate() != nil {
				t.Fatalf("FromEnv(%v) = %v, invalid", env, s)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "shard:") {
				t.Fatalf("error without context: %v", err)
			}
		}
		if n := len(v)%50 + 1; Of(v, n) < 0 || Of(v, n) >= n {
			t.Fatalf("Of(%q, %d) = %d", v, n, Of(v, n))
		}
	})
}
