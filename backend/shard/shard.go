// Package shard splits an evaluation across processes that a cluster's own
// engine starts (Slurm job arrays, Kubernetes Indexed Jobs): which shard a
// process is, read from a flag or the engine's environment, and which images
// belong to it, by a hash of each image's relative path - deterministic and
// stable, so that a retried shard scores exactly the same images and adding
// images to a dataset moves only those images.
package shard

import (
	"fmt"
	"hash/fnv"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Spec is one shard of Count: Index in [0, Count).
type Spec struct {
	Index, Count int
}

// MaxCount bounds the shard count (partition names have four digits).
const MaxCount = 9999

// None is the whole set in one process.
var None = Spec{Index: 0, Count: 1}

// Sharded reports whether the set is split at all.
func (s Spec) Sharded() bool { return s.Count > 1 }

// Validate checks the index against the count.
func (s Spec) Validate() error {
	if s.Count < 1 || s.Count > MaxCount {
		return fmt.Errorf("shard: count %d out of range 1..%d", s.Count, MaxCount)
	}
	if s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("shard: index %d out of range 0..%d (shard %d/%d)", s.Index, s.Count-1, s.Index, s.Count)
	}
	return nil
}

// String is "i/n", the flag's form.
func (s Spec) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Parse reads "i/n" (0-based index).
func Parse(v string) (Spec, error) {
	i, n, ok := strings.Cut(strings.TrimSpace(v), "/")
	if !ok {
		return Spec{}, fmt.Errorf("shard %q: want INDEX/COUNT, e.g. 3/16 (0-based index)", v)
	}
	ii, err1 := strconv.Atoi(i)
	nn, err2 := strconv.Atoi(n)
	if err1 != nil || err2 != nil {
		return Spec{}, fmt.Errorf("shard %q: want INDEX/COUNT with whole numbers, e.g. 3/16", v)
	}
	s := Spec{Index: ii, Count: nn}
	if err := s.Validate(); err != nil {
		return Spec{}, fmt.Errorf("shard %q: %w", v, err)
	}
	return s, nil
}

// Environment variables the engines set, and diad's own count variable for
// Kubernetes (an Indexed Job gives each pod its index, not the count).
const (
	EnvSlurmID    = "SLURM_ARRAY_TASK_ID"
	EnvSlurmMin   = "SLURM_ARRAY_TASK_MIN"
	EnvSlurmCount = "SLURM_ARRAY_TASK_COUNT"
	EnvSlurmStep  = "SLURM_ARRAY_TASK_STEP"
	EnvK8sIndex   = "JOB_COMPLETION_INDEX"
	EnvCount      = "DIAD_SHARD_COUNT"
	// EnvRunID names the run every shard writes into (set once for a
	// whole job array or Indexed Job) when --run-id is not given.
	EnvRunID = "DIAD_RUN_ID"
)

// FromEnv finds the shard from the engine's environment: a Slurm array task
// (index = (ID - MIN) / STEP of COUNT tasks), or a Kubernetes Indexed Job
// pod (JOB_COMPLETION_INDEX, with the count from count if > 0, else from
// DIAD_SHARD_COUNT). found is false when neither engine's variables are set.
func FromEnv(getenv func(string) string, count int) (s Spec, found bool, err error) {
	num := func(name string) (int, error) {
		v, err := strconv.Atoi(strings.TrimSpace(getenv(name)))
		if err != nil {
			return 0, fmt.Errorf("shard: %s=%q is not a whole number", name, getenv(name))
		}
		return v, nil
	}
	if getenv(EnvSlurmID) != "" {
		id, err := num(EnvSlurmID)
		if err != nil {
			return Spec{}, true, err
		}
		if getenv(EnvSlurmMin) == "" || getenv(EnvSlurmCount) == "" {
			return Spec{}, true, fmt.Errorf("shard: %s is set but %s or %s is not (is this a job array?)", EnvSlurmID, EnvSlurmMin, EnvSlurmCount)
		}
		lo, err := num(EnvSlurmMin)
		if err != nil {
			return Spec{}, true, err
		}
		n, err := num(EnvSlurmCount)
		if err != nil {
			return Spec{}, true, err
		}
		step := 1
		if getenv(EnvSlurmStep) != "" {
			if step, err = num(EnvSlurmStep); err != nil {
				return Spec{}, true, err
			}
			step = max(step, 1)
		}
		if (id-lo)%step != 0 {
			return Spec{}, true, fmt.Errorf("shard: array task %d is not on the array's step %d from %d", id, step, lo)
		}
		s = Spec{Index: (id - lo) / step, Count: n}
		if err := s.Validate(); err != nil {
			return Spec{}, true, fmt.Errorf("shard: Slurm array task %d (min %d, count %d): %w", id, lo, n, err)
		}
		return s, true, nil
	}
	if getenv(EnvK8sIndex) != "" {
		i, err := num(EnvK8sIndex)
		if err != nil {
			return Spec{}, true, err
		}
		if count <= 0 {
			if getenv(EnvCount) == "" {
				return Spec{}, true, fmt.Errorf("shard: %s=%d is set but the shard count is not: give --shards N or set %s (the Job's completions)", EnvK8sIndex, i, EnvCount)
			}
			if count, err = num(EnvCount); err != nil {
				return Spec{}, true, err
			}
		}
		s = Spec{Index: i, Count: count}
		if err := s.Validate(); err != nil {
			return Spec{}, true, fmt.Errorf("shard: Kubernetes completion index %d of %d: %w", i, count, err)
		}
		return s, true, nil
	}
	return None, false, nil
}

// Of is the shard, out of count, of the image at relPath (relative to the
// dataset root or the folder given, with / separators): FNV-1a 64 of the
// path, modulo count.
func Of(relPath string, count int) int {
	h := fnv.New64a()
	h.Write([]byte(filepath.ToSlash(relPath)))
	return int(h.Sum64() % uint64(count))
}

// Owns reports whether the image at relPath belongs to shard s.
func (s Spec) Owns(relPath string) bool { return s.Count <= 1 || Of(relPath, s.Count) == s.Index }

// DirName is the shard's hive-style partition folder: shard=0003-of-0016.
func (s Spec) DirName() string { return fmt.Sprintf("shard=%04d-of-%04d", s.Index, s.Count) }

var dirPattern = regexp.MustCompile(`^shard=([0-9]{4})-of-([0-9]{4})$`)

// ParseDirName reads a partition folder's name; ok is false for any other name.
func ParseDirName(name string) (s Spec, ok bool) {
	m := dirPattern.FindStringSubmatch(name)
	if m == nil {
		return Spec{}, false
	}
	i, err1 := strconv.Atoi(m[1])
	n, err2 := strconv.Atoi(m[2])
	s = Spec{Index: i, Count: n}
	if err1 != nil || err2 != nil || s.Validate() != nil {
		return Spec{}, false
	}
	return s, true
}
