package server

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/shared"
)

var updateOpenAPI = flag.Bool("update-openapi", false, "rewrite openapi.json's schemas and success responses from the shared types")

// wireTypes are the REST API's bodies, all defined in shared; openapi.json
// has one schema per type, of the same name.
var wireTypes = []any{
	shared.APIError{}, shared.Status{}, shared.VersionInfo{}, shared.LoadModelRequest{},
	shared.Dataset{}, shared.RegisterDataset{}, shared.Upload{}, shared.Model{},
	shared.JobRequest{}, shared.Job{}, shared.JobProgress{}, shared.JobEvent{},
	shared.RunInfo{}, shared.RunDataset{}, shared.RunFeatures{}, shared.RunThreshold{}, shared.SamplerConfig{},
	shared.ImagePage{}, shared.ImageInfo{}, shared.LabelRequest{}, shared.ThresholdRequest{}, shared.MetricValue{},
	shared.BulkLabelRequest{}, shared.ImageLabel{}, shared.LabelChange{},
}

// successBodies names each JSON route's success answer: status, schema and
// whether it is a list. Request bodies are named in requestBodies.
var successBodies = map[string]struct {
	status string
	schema string
	list   bool
}{
	"get /api/v1/status":                          {"200", "Status", false},
	"get /api/v1/datasets":                        {"200", "Dataset", true},
	"post /api/v1/datasets":                       {"201", "Dataset", false},
	"post /api/v1/uploads":                        {"201", "Upload", false},
	"get /api/v1/models":                          {"200", "Model", true},
	"post /api/v1/models/load":                    {"200", "Status", false},
	"get /api/v1/jobs":                            {"200", "Job", true},
	"post /api/v1/jobs":                           {"202", "Job", false},
	"get /api/v1/jobs/{id}":                       {"200", "Job", false},
	"post /api/v1/jobs/{id}/cancel":               {"200", "Job", false},
	"get /api/v1/runs":                            {"200", "RunInfo", true},
	"get /api/v1/runs/{run}":                      {"200", "RunInfo", false},
	"get /api/v1/runs/{run}/images":               {"200", "ImagePage", false},
	"put /api/v1/runs/{run}/images/{image}/label": {"200", "ImageInfo", false},
	"put /api/v1/runs/{run}/threshold":            {"200", "RunInfo", false},
	"put /api/v1/runs/{run}/labels":               {"200", "ImageInfo", true},
	"get /api/v1/runs/{run}/labels/history":       {"200", "LabelChange", true},
	"get /api/v1/runs/{run}/metrics":              {"200", "MetricValue", true},
}

var requestBodies = map[string]string{
	"post /api/v1/datasets":                       "RegisterDataset",
	"post /api/v1/models/load":                    "LoadModelRequest",
	"post /api/v1/jobs":                           "JobRequest",
	"put /api/v1/runs/{run}/images/{image}/label": "LabelRequest",
	"put /api/v1/runs/{run}/threshold":            "ThresholdRequest",
	"put /api/v1/runs/{run}/labels":               "BulkLabelRequest",
}

const schemaRef = "#/components/schemas/"

// schemaOf is the JSON schema of a Go type as encoding/json writes it;
// structs must be wire types (referenced by name).
func schemaOf(t reflect.Type, named map[string]bool) (map[string]any, error) {
	if t == reflect.TypeOf(time.Time{}) {
		return map[string]any{"type": "string", "format": "date-time"}, nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		s, err := schemaOf(t.Elem(), named)
		if err != nil {
			return nil, err
		}
		if _, isRef := s["$ref"]; isRef {
			return map[string]any{"allOf": []any{s}, "nullable": true}, nil
		}
		s["nullable"] = true
		return s, nil
	case reflect.String:
		return map[string]any{"type": "string"}, nil
	case reflect.Bool:
		return map[string]any{"type": "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}, nil
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}, nil
	case reflect.Slice, reflect.Array:
		items, err := schemaOf(t.Elem(), named)
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "array", "items": items}, nil
	case reflect.Map:
		vals, err := schemaOf(t.Elem(), named)
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "object", "additionalProperties": vals}, nil
	case reflect.Interface:
		return map[string]any{}, nil
	case reflect.Struct:
		if !named[t.Name()] {
			return nil, fmt.Errorf("%s is not a wire type: add it to wireTypes", t)
		}
		return map[string]any{"$ref": schemaRef + t.Name()}, nil
	}
	return nil, fmt.Errorf("no schema for %s", t)
}

// objectSchema lists a struct's JSON properties (embedded structs
// flattened, as encoding/json does).
func objectSchema(t reflect.Type, named map[string]bool, props map[string]any) error {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			if err := objectSchema(f.Type, named, props); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		s, err := schemaOf(f.Type, named)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", t.Name(), f.Name, err)
		}
		props[name] = s
	}
	return nil
}

// wireSchemas generates components.schemas, keeping what the committed
// document adds to a property whose type agrees (enums, descriptions) and
// each schema's required list.
func wireSchemas(old map[string]any) (map[string]any, error) {
	named := map[string]bool{}
	for _, v := range wireTypes {
		named[reflect.TypeOf(v).Name()] = true
	}
	out := map[string]any{}
	for _, v := range wireTypes {
		t := reflect.TypeOf(v)
		props := map[string]any{}
		if err := objectSchema(t, named, props); err != nil {
			return nil, err
		}
		schema := map[string]any{"type": "object", "properties": props}
		if prev, ok := old[t.Name()].(map[string]any); ok {
			if req, ok := prev["required"]; ok {
				schema["required"] = req
			}
			if d, ok := prev["description"]; ok {
				schema["description"] = d
			}
			prevProps, _ := prev["properties"].(map[string]any)
			for name, p := range props {
				pp, ok := prevProps[name].(map[string]any)
				if !ok {
					continue
				}
				gen := p.(map[string]any)
				same := true
				for k, v := range gen {
					if !reflect.DeepEqual(pp[k], v) {
						same = false
					}
				}
				if same {
					for k, v := range pp {
						if _, set := gen[k]; !set && (k == "enum" || k == "description" || k == "example") {
							gen[k] = v
						}
					}
				}
			}
		}
		out[t.Name()] = schema
	}
	return out, nil
}

func jsonContent(schema string, list bool) map[string]any {
	var s map[string]any = map[string]any{"$ref": schemaRef + schema}
	if list {
		s = map[string]any{"type": "array", "items": s}
	}
	return map[string]any{"application/json": map[string]any{"schema": s}}
}

// wireDocument is doc with the generated schemas, success bodies, request
// bodies and the error body on every 4xx/5xx answer.
func wireDocument(doc map[string]any) (map[string]any, error) {
	comps, _ := doc["components"].(map[string]any)
	if comps == nil {
		comps = map[string]any{}
		doc["components"] = comps
	}
	old, _ := comps["schemas"].(map[string]any)
	schemas, err := wireSchemas(old)
	if err != nil {
		return nil, err
	}
	comps["schemas"] = schemas
	paths, _ := doc["paths"].(map[string]any)
	for key, body := range successBodies {
		method, path, _ := strings.Cut(key, " ")
		op, ok := paths[path].(map[string]any)[method].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("openapi.json has no %s", key)
		}
		resp, _ := op["responses"].(map[string]any)
		r, _ := resp[body.status].(map[string]any)
		if r == nil {
			r = map[string]any{"description": "OK"}
			resp[body.status] = r
		}
		r["content"] = jsonContent(body.schema, body.list)
	}
	for key, schema := range requestBodies {
		method, path, _ := strings.Cut(key, " ")
		op, ok := paths[path].(map[string]any)[method].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("openapi.json has no %s", key)
		}
		op["requestBody"] = map[string]any{"required": true, "content": jsonContent(schema, false)}
	}
	for _, item := range paths {
		for _, op := range item.(map[string]any) {
			resp, _ := op.(map[string]any)["responses"].(map[string]any)
			for code, r := range resp {
				if code >= "400" && code != "426" {
					r.(map[string]any)["content"] = jsonContent("APIError", false)
				}
			}
		}
	}
	return doc, nil
}

// TestOpenAPIAgreesWithShared: openapi.json's schemas are the shared types'
// JSON, property by property, and every JSON route names its bodies (run
// with -update-openapi after changing a shared type).
func TestOpenAPIAgreesWithShared(t *testing.T) {
	committed := filetest.Read(t, "openapi.json")
	var doc map[string]any
	if err := json.Unmarshal(committed, &doc); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(committed, &want); err != nil {
		t.Fatal(err)
	}
	want, err := wireDocument(want)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	wantJSON = append(wantJSON, '\n')
	if *updateOpenAPI {
		filetest.Write(t, "openapi.json", wantJSON)
		return
	}
	if bytes.Equal(committed, wantJSON) {
		return
	}
	// Say which schema or route differs.
	var got map[string]any
	if err := json.Unmarshal(committed, &got); err != nil {
		t.Fatal(err)
	}
	gs, _ := got["components"].(map[string]any)["schemas"].(map[string]any)
	ws := want["components"].(map[string]any)["schemas"].(map[string]any)
	var names []string
	for n := range ws {
		names = append(names, n)
	}
	for n := range gs {
		if _, ok := ws[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if !reflect.DeepEqual(gs[n], ws[n]) {
			a, err := json.Marshal(gs[n])
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(ws[n])
			if err != nil {
				t.Fatal(err)
			}
			t.Errorf("schema %s:\n openapi.json %s\n shared       %s", n, a, b)
		}
	}
	t.Fatal("openapi.json disagrees with the shared types; after checking the change, run: go test ./backend/server -run TestOpenAPIAgreesWithShared -update-openapi")
}
