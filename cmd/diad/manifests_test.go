package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/shard"
	"github.com/diad-project/diad/results"
)

// decodeStrict decodes one YAML document into v as the API server would,
// refusing fields the official type does not have (a misspelt field).
func decodeStrict(t *testing.T, name string, doc []byte, v any) {
	t.Helper()
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// manifests reads deploy/k8s's YAML files as documents by kind.
func manifests(t *testing.T) (jobs map[string]*batchv1.Job, claims map[string]*corev1.PersistentVolumeClaim) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "k8s", "*.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	jobs, claims = map[string]*batchv1.Job{}, map[string]*corev1.PersistentVolumeClaim{}
	for _, f := range files {
		b := filetest.Read(t, f)
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			var head struct{ APIVersion, Kind string }
			name := filepath.Base(f) + "#" + strconv.Itoa(i)
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			switch head.APIVersion + " " + head.Kind {
			case "batch/v1 Job":
				j := &batchv1.Job{}
				decodeStrict(t, name, doc, j)
				jobs[filepath.Base(f)] = j
			case "v1 PersistentVolumeClaim":
				c := &corev1.PersistentVolumeClaim{}
				decodeStrict(t, name, doc, c)
				claims[c.Name] = c
			default:
				t.Fatalf("%s: unexpected %s %s", name, head.APIVersion, head.Kind)
			}
		}
	}
	return jobs, claims
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// The Kubernetes manifests decode strictly into the official types; the
// Indexed Jobs give diad what it reads (JOB_COMPLETION_INDEX is set by
// Kubernetes, the count and run id by the manifest, matching completions);
// every container's arguments parse with diad's own flags; volumes are
// declared and claims exist.
func TestKubernetesManifests(t *testing.T) {
	jobs, claims := manifests(t)
	if len(claims) < 2 {
		t.Fatalf("claims %v", claims)
	}
	indexed := 0
	var runIDs []string
	for name, j := range jobs {
		spec := j.Spec.Template.Spec
		if spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: restartPolicy %q: a shard retried in place would hide a failure from backoffLimitPerIndex", name, spec.RestartPolicy)
		}
		if len(spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(spec.Containers))
		}
		c := spec.Containers[0]
		env := envOf(c)
		if !results.ValidRunID(env[shard.EnvRunID]) {
			t.Errorf("%s: %s=%q is not a run id", name, shard.EnvRunID, env[shard.EnvRunID])
		}
		runIDs = append(runIDs, env[shard.EnvRunID])
		// diad's own command line parser accepts the arguments.
		args := append([]string(nil), c.Args...)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "$("+shard.EnvRunID+")", env[shard.EnvRunID])
		}
		root := newRootCmd()
		sub, rest, err := root.Find(args)
		if err != nil || sub == root {
			t.Fatalf("%s: command %v: %v", name, c.Args, err)
		}
		if err := sub.ParseFlags(rest); err != nil {
			t.Fatalf("%s: diad %s refuses %v: %v", name, sub.Name(), rest, err)
		}
		if err := sub.ValidateArgs(sub.Flags().Args()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkVolumes(t, name, spec, c, claims)
		if j.Spec.CompletionMode == nil || *j.Spec.CompletionMode != batchv1.IndexedCompletion {
			if sub.Name() != "merge" {
				t.Errorf("%s: %s job is not Indexed", name, sub.Name())
			}
			continue
		}
		indexed++
		checkIndexedJob(t, name, j, sub, env, c)
	}
	if indexed < 2 || jobs["merge-job.yaml"] == nil {
		t.Fatalf("want a CPU and a GPU Indexed Job and a merge Job, have %d indexed of %v", indexed, len(jobs))
	}
	for _, id := range runIDs[1:] {
		if id != runIDs[0] {
			t.Errorf("the jobs name different runs: %v", runIDs)
		}
	}
}

// checkVolumes: every volume of a job has its claim in volumes.yaml, and
// every mount its volume.
func checkVolumes(t *testing.T, name string, spec corev1.PodSpec, c corev1.Container, claims map[string]*corev1.PersistentVolumeClaim) {
	mounted := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim == nil || claims[v.PersistentVolumeClaim.ClaimName] == nil {
			t.Errorf("%s: volume %s has no claim in volumes.yaml", name, v.Name)
		}
		mounted[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !mounted[m.Name] {
			t.Errorf("%s: mount %s of no volume", name, m.Name)
		}
	}
}

// checkIndexedJob: an Indexed Job runs test or predict, takes its shard
// from the Job's index, counts its shards as its completions, retries per
// index, and asks for a GPU exactly when it runs on CUDA.
func checkIndexedJob(t *testing.T, name string, j *batchv1.Job, sub *cobra.Command, env map[string]string, c corev1.Container) {
	if sub.Name() != "test" && sub.Name() != "predict" {
		t.Errorf("%s: an Indexed Job running %s", name, sub.Name())
	}
	if sub.Flags().Changed("shard") || sub.Flags().Changed("no-shard-env") {
		t.Errorf("%s: the shard must come from the Job's index, not --shard", name)
	}
	if _, set := env[shard.EnvK8sIndex]; set {
		t.Errorf("%s: sets %s itself; Kubernetes sets it", name, shard.EnvK8sIndex)
	}
	n := int(*j.Spec.Completions)
	if env[shard.EnvCount] != strconv.Itoa(n) || j.Spec.Parallelism == nil || *j.Spec.Parallelism > int32(n) {
		t.Errorf("%s: %s=%q, completions %d, parallelism %v", name, shard.EnvCount, env[shard.EnvCount], n, j.Spec.Parallelism)
	}
	if j.Spec.BackoffLimitPerIndex == nil {
		t.Errorf("%s: no backoffLimitPerIndex: one failing shard would fail the others' retries", name)
	}
	// What diad makes of pod 2's environment: shard 2 of N.
	podEnv := map[string]string{shard.EnvK8sIndex: "2"}
	for k, v := range env {
		podEnv[k] = v
	}
	s, found, err := shard.FromEnv(func(k string) string { return podEnv[k] }, 0)
	if err != nil || !found || s != (shard.Spec{Index: 2, Count: n}) {
		t.Errorf("%s: pod 2 would be shard %v (found %v, %v)", name, s, found, err)
	}
	gpu := strings.Contains(name, "gpu")
	_, hasGPU := c.Resources.Limits["nvidia.com/gpu"]
	dev, err := sub.Flags().GetString("device")
	if err != nil {
		t.Fatal(err)
	}
	if gpu != hasGPU || gpu != (dev == "cuda") {
		t.Errorf("%s: GPU limit %v with --device %s", name, hasGPU, dev)
	}
}
