// Command patchgotch writes third_party/gotch: the packages of gotch v0.9.1
// that diad builds on (the root package, libtch, ts, nn), taken from the Go
// module cache and patched as third_party/gotch/PATCHES.md explains. It is
// the only way that folder changes: run it again after changing a patch.
//
//	go mod download github.com/sugarme/gotch@v0.9.1
//	go run ./third_party/patchgotch
//
// Every patch names the upstream text it replaces and fails when that text
// is missing, so a different upstream version stops the tool instead of
// being patched half.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Upstream is the gotch release the copy is made from.
const Upstream = "github.com/sugarme/gotch@v0.9.1"

// packages are the upstream folders copied ("" is the module root); only
// their non-test files, plus the module's LICENSE, go.mod and go.sum.
var packages = []string{"", "libtch", "ts", "nn"}

func main() {
	from := flag.String("from", "", "upstream module folder (default: the module cache's "+Upstream+")")
	to := flag.String("to", "third_party/gotch", "output folder (replaced)")
	flag.Parse()
	if err := run(*from, *to); err != nil {
		fmt.Fprintln(os.Stderr, "patchgotch:", err)
		os.Exit(1)
	}
}

func run(from, to string) error {
	if from == "" {
		dir, err := moduleDir(Upstream)
		if err != nil {
			return err
		}
		from = dir
	}
	files, err := collect(from)
	if err != nil {
		return err
	}
	for name, patch := range filePatches {
		src, ok := files[name]
		if !ok {
			return fmt.Errorf("%s: not in %s", name, from)
		}
		out, err := patch(src)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		files[name] = out
	}
	files["libtch/fatal.go"] = []byte(fatalGo)
	files["fatal.go"] = []byte(rootFatalGo)
	for name, src := range files {
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "fatal.go") {
			continue
		}
		out, err := removeFatal(src, strings.TrimSuffix(filepath.ToSlash(filepath.Dir(name)), "."))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if strings.HasPrefix(name, "ts/") {
			if out, err = sizeOutPointers(out); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if out, err = fixImports(name, out); err != nil {
			return err
		}
		files[name] = out
	}
	// PATCHES.md is written by hand and kept; everything else is replaced.
	notes, err := os.ReadFile(filepath.Join(to, "PATCHES.md"))
	if err != nil {
		return fmt.Errorf("%s/PATCHES.md must exist (it explains the patches): %w", to, err)
	}
	if err := os.RemoveAll(to); err != nil {
		return err
	}
	files["PATCHES.md"] = notes
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(to, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("wrote %d files to %s from %s\n", len(names), to, from)
	return nil
}

// moduleDir asks the go command where a module version lives (downloading it).
func moduleDir(mod string) (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", mod).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", mod, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", mod, err)
	}
	if info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, info.Error)
	}
	return info.Dir, nil
}

// collect reads the copied files, keyed by slash path relative to the module.
func collect(root string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, name := range []string{"LICENSE", "go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return nil, err
		}
		files[name] = b
	}
	for _, pkg := range packages {
		dir := filepath.Join(root, pkg)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() || strings.HasSuffix(n, "_test.go") || n == "README.md" {
				continue
			}
			if pkg == "" && !strings.HasSuffix(n, ".go") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				return nil, err
			}
			files[strings.TrimPrefix(pkg+"/"+n, "/")] = b
		}
	}
	if len(files) < 10 {
		return nil, fmt.Errorf("%s: only %d files found", root, len(files))
	}
	return files, nil
}

// replace swaps one exact upstream text for another, or fails.
func replace(src []byte, old, new string) ([]byte, error) {
	if n := bytes.Count(src, []byte(old)); n != 1 {
		return nil, fmt.Errorf("upstream text found %d times, want once: %q", n, firstLine(old))
	}
	return bytes.Replace(src, []byte(old), []byte(new), 1), nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

var fatalCall = regexp.MustCompile(`\blog\.Fatal(f|ln)?\(`)

// removeFatal turns every log.Fatal* into a panic carrying *gotch.FatalError
// (see fatalGo), which a caller can recover; upstream exits the process.
// pkg is the file's folder ("" for the root package).
func removeFatal(src []byte, pkg string) ([]byte, error) {
	qual := "gotch."
	if pkg == "" || pkg == "libtch" {
		qual = ""
	}
	var prefixes []string
	out := fatalCall.ReplaceAllFunc(src, func(m []byte) []byte {
		fn := "Fatal"
		if bytes.Contains(m, []byte("Fatalf")) {
			fn = "Fatalf"
		}
		p := "panic(" + qual + fn + "("
		prefixes = append(prefixes, p)
		return []byte(p)
	})
	if bytes.Equal(out, src) {
		return src, nil
	}
	// Each rewritten call gained one opening parenthesis: close it at the
	// end of the call.
	return closeCalls(out, prefixes)
}

// rootFatalGo re-exports libtch's FatalError from the root package, where
// diad and the ts and nn packages find it.
const rootFatalGo = `package gotch

import lib "github.com/sugarme/gotch/libtch"

// FatalError is what upstream gotch passes to log.Fatal, which exits the
// process: here the operation panics with it instead (see libtch.FatalError).
type FatalError = lib.FatalError

// Fatal builds the panic value of a log.Fatal(v...) call.
func Fatal(v ...any) *FatalError { return lib.Fatal(v...) }

// Fatalf builds the panic value of a log.Fatalf(format, v...) call.
func Fatalf(format string, v ...any) *FatalError { return lib.Fatalf(format, v...) }
`

// fatalGo is added to libtch (the package every other imports): what
// log.Fatal* calls become; rootFatalGo gives the root package the same names.
const fatalGo = `package libtch

import (
	"errors"
	"fmt"
)

// FatalError is what upstream gotch passes to log.Fatal, which exits the
// process: here the operation panics with it instead, so that the caller can
// recover (diad turns it into an error at its boundary). Err is the original
// error when there was one.
type FatalError struct {
	Msg string
	Err error
}

func (e *FatalError) Error() string { return e.Msg }

// Unwrap gives the original error.
func (e *FatalError) Unwrap() error { return e.Err }

// Fatal builds the panic value of a log.Fatal(v...) call.
func Fatal(v ...any) *FatalError {
	e := &FatalError{Msg: fmt.Sprint(v...)}
	if len(v) == 1 {
		if err, ok := v[0].(error); ok {
			e.Err = err
		}
	}
	return e
}

// Fatalf builds the panic value of a log.Fatalf(format, v...) call.
func Fatalf(format string, v ...any) *FatalError {
	err := fmt.Errorf(format, v...)
	return &FatalError{Msg: err.Error(), Err: errors.Unwrap(err)}
}
`

// closeCalls adds a ')' after the argument list of each call that starts
// with one of the prefixes.
func closeCalls(src []byte, prefixes []string) ([]byte, error) {
	var b bytes.Buffer
	i := 0
	for i < len(src) {
		start, pre := -1, ""
		for _, p := range prefixes {
			if j := bytes.Index(src[i:], []byte(p)); j >= 0 && (start < 0 || i+j < start) {
				start, pre = i+j, p
			}
		}
		if start < 0 {
			b.Write(src[i:])
			break
		}
		b.Write(src[i : start+len(pre)])
		depth, k := 1, start+len(pre)
		inStr := byte(0)
		for ; k < len(src) && depth > 0; k++ {
			c := src[k]
			switch {
			case inStr != 0:
				if c == '\\' && inStr != '`' {
					b.WriteByte(c)
					k++
					c = src[k]
				} else if c == inStr {
					inStr = 0
				}
			case c == '"' || c == '`' || c == '\'':
				inStr = c
			case c == '(':
				depth++
			case c == ')':
				depth--
			}
			b.WriteByte(c)
		}
		if depth != 0 {
			return nil, fmt.Errorf("unbalanced call at byte %d", start)
		}
		b.WriteByte(')')
		i = k
	}
	return b.Bytes(), nil
}

var (
	outPtr     = regexp.MustCompile(`(?m)^(\s*)(ptr|ctensorPtr0|ctensorPtr1|outputPtr|ptr1) := \(\*lib\.(Ctensor|Civalue)\)\(unsafe\.Pointer\(C\.malloc\(0\)\)\)\n`)
	outPtrRaw  = regexp.MustCompile(`(?m)^(\s*)ptr1 := unsafe\.Pointer\(C\.malloc\(0\)\)\n`)
	funcStart  = regexp.MustCompile(`(?m)^func`)
	extraOuts  = regexp.MustCompile(`ctensorPtr(\d+) :=`)
	malloc0Any = regexp.MustCompile(`C\.malloc\(0\)`)
)

// sizeOutPointers gives every generated wrapper's out-pointer a C allocation
// of the size libtorch writes (one pointer per returned tensor) and frees it
// when the wrapper returns. Upstream allocates malloc(0) and never frees it:
// 20-30 bytes lost per operation, and wrappers with more than three outputs
// write past the allocation.
func sizeOutPointers(src []byte) ([]byte, error) {
	starts := funcStart.FindAllIndex(src, -1)
	var b bytes.Buffer
	prev := 0
	for k, s := range starts {
		end := len(src)
		if k+1 < len(starts) {
			end = starts[k+1][0]
		}
		b.Write(src[prev:s[0]])
		fn := src[s[0]:end]
		outs := 1
		for _, m := range extraOuts.FindAllSubmatch(fn, -1) {
			n, err := strconv.Atoi(string(m[1])) // \d+ in the pattern
			if err != nil {
				return nil, fmt.Errorf("output index %q: %w", m[1], err)
			}
			outs = max(outs, n+1)
		}
		fn = outPtr.ReplaceAllFunc(fn, func(m []byte) []byte {
			g := outPtr.FindSubmatch(m)
			ind, name, typ := string(g[1]), string(g[2]), string(g[3])
			return []byte(fmt.Sprintf("%s%s := (*lib.%s)(C.malloc(C.size_t(%d) * C.size_t(unsafe.Sizeof(uintptr(0)))))\n%sdefer C.free(unsafe.Pointer(%s))\n",
				ind, name, typ, outs, ind, name))
		})
		fn = outPtrRaw.ReplaceAllFunc(fn, func(m []byte) []byte {
			ind := string(outPtrRaw.FindSubmatch(m)[1])
			return []byte(fmt.Sprintf("%sptr1 := C.malloc(C.size_t(unsafe.Sizeof(uintptr(0))))\n%sdefer C.free(ptr1)\n", ind, ind))
		})
		b.Write(fn)
		prev = end
	}
	b.Write(src[prev:])
	// where upstream already freed the pointer, once is enough
	lines := bytes.Split(b.Bytes(), []byte("\n"))
	kept := lines[:0]
	for i, l := range lines {
		if i > 0 && bytes.HasPrefix(bytes.TrimSpace(l), []byte("defer C.free(")) && bytes.Equal(bytes.TrimSpace(l), bytes.TrimSpace(lines[i-1])) {
			continue
		}
		kept = append(kept, l)
	}
	out := bytes.Join(kept, []byte("\n"))
	for _, line := range bytes.Split(out, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if malloc0Any.Match(line) && !bytes.HasPrefix(t, []byte("//")) && !bytes.HasPrefix(t, []byte("*")) {
			return nil, fmt.Errorf("a malloc(0) is left: %s", bytes.TrimSpace(line))
		}
	}
	return out, nil
}

// importPaths are the imports fixImports manages, by the name code uses.
var importPaths = map[string]string{"log": "log", "fmt": "fmt", "gotch": "github.com/sugarme/gotch"}

// fixImports gofmt's a file and drops an import the patches left unused
// ("log"), or adds "fmt" where a patch needs it.
func fixImports(name string, src []byte) ([]byte, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})
	for _, id := range []string{"log", "fmt", "gotch"} {
		path := importPaths[id]
		if id == "gotch" && f.Name.Name == "gotch" {
			continue
		}
		has := false
		for _, im := range f.Imports {
			if im.Path.Value == strconv.Quote(path) {
				has = true
			}
		}
		switch {
		case has && !used[id] && id == "log":
			deleteImport(f, path)
		case !has && used[id]:
			addImport(f, path)
		}
	}
	// an import the patches left unused (sync, once the mutex is gone)
	for _, im := range append([]*ast.ImportSpec(nil), f.Imports...) {
		path, _ := strconv.Unquote(im.Path.Value)
		if im.Name != nil || path == "C" {
			continue
		}
		if id := path[strings.LastIndex(path, "/")+1:]; !used[id] {
			deleteImport(f, path)
		}
	}
	var b bytes.Buffer
	if err := format.Node(&b, fset, f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b.Bytes(), nil
}

func deleteImport(f *ast.File, path string) {
	q := strconv.Quote(path)
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.IMPORT {
			continue
		}
		specs := g.Specs[:0]
		for _, s := range g.Specs {
			if is := s.(*ast.ImportSpec); is.Path.Value != q || is.Name != nil {
				specs = append(specs, s)
			}
		}
		g.Specs = specs
	}
	imps := f.Imports[:0]
	for _, im := range f.Imports {
		if im.Path.Value != q || im.Name != nil {
			imps = append(imps, im)
		}
	}
	f.Imports = imps
}

func addImport(f *ast.File, path string) {
	spec := &ast.ImportSpec{Path: &ast.BasicLit{Kind: token.STRING, Value: strconv.Quote(path)}}
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.IMPORT && g.Lparen.IsValid() {
			g.Specs = append(g.Specs, spec)
			f.Imports = append(f.Imports, spec)
			return
		}
	}
	f.Decls = append([]ast.Decl{&ast.GenDecl{Tok: token.IMPORT, Specs: []ast.Spec{spec}}}, f.Decls...)
	f.Imports = append(f.Imports, spec)
}

// filePatches are the hand-written changes, by file.
var filePatches = map[string]func([]byte) ([]byte, error){
	"ts/tensor.go": patchTensor,
	"ts/scalar.go": patchScalar,
}

// edits applies replacements in order.
func edits(src []byte, pairs ...[2]string) ([]byte, error) {
	var err error
	for _, p := range pairs {
		if src, err = replace(src, p[0], p[1]); err != nil {
			return nil, err
		}
	}
	return src, nil
}

// patchTensor removes the per-tensor ballast, the global name registry and
// its mutex: a tensor is its C pointer (and, with gotch.Debug, a name), live
// tensors are counted atomically, and the finalizer stays as a safety net
// for tensors a caller forgets (diad frees every tensor it makes).
func patchTensor(src []byte) ([]byte, error) {
	return edits(src,
		// Float64Values leaves its float64 copy to the finalizer (the free is
		// commented out upstream); Int64Values beside it frees its copy.
		[2]string{`	float64Ts.MustCopyData(vec, numel)
	// float64Ts.MustDrop()
`, `	float64Ts.MustCopyData(vec, numel)
	float64Ts.MustDrop()
`},
		[2]string{`
	ExistingTensors map[string]struct{} = make(map[string]struct{}) // keep track of existing tensors by name
	ExistingScalars map[string]struct{} = make(map[string]struct{}) // keep track of existing scalar by name
	lock            sync.Mutex
)`, `
	// liveTensors and liveScalars count what was made and not yet freed
	// (upstream keeps every name in a map behind a mutex).
	liveTensors int64
	liveScalars int64
)

// LiveTensors is how many tensors were made and not yet freed.
func LiveTensors() int64 { return atomic.LoadInt64(&liveTensors) }

// LiveScalars is how many scalars were made and not yet freed.
func LiveScalars() int64 { return atomic.LoadInt64(&liveScalars) }`},
		[2]string{`type bigStruct struct {
	lots [1e5]byte // 100k - always on host memory.
}

`, ``},
		[2]string{`type Tensor struct {
	d          *bigStruct
	name       string`, `type Tensor struct {
	name       string`},
		[2]string{`	x := new(Tensor)
	x.ctensor = ctensor
	x.d = new(bigStruct)

	lock.Lock()
	atomic.AddInt64(&TensorCount, 1)
	if gotch.Debug {
		nbytes := x.nbytes()
		atomic.AddInt64(&AllocatedMem, nbytes)

		log.Printf("INFO: Added tensor %q - Allocated memory: %d bytes.\n", x.name, nbytes)
	}
	name := newName(nameOpt...)
	if _, ok := ExistingTensors[name]; ok {
		name = fmt.Sprintf("%s_%09d", name, TensorCount)
	}
	ExistingTensors[name] = struct{}{}
	lock.Unlock()

	x.name = name

	x.calledFrom = "newTensor()"

	runtime.SetFinalizer(x, freeCTensor)`, `	x := &Tensor{ctensor: ctensor}
	atomic.AddInt64(&TensorCount, 1)
	atomic.AddInt64(&liveTensors, 1)
	if gotch.Debug {
		x.name = newName(nameOpt...)
		x.calledFrom = "newTensor()"
		nbytes := x.nbytes()
		atomic.AddInt64(&AllocatedMem, nbytes)
		log.Printf("INFO: Added tensor %q - Allocated memory: %d bytes.\n", x.name, nbytes)
	}

	runtime.SetFinalizer(x, freeCTensor)`},
		[2]string{`	tensors := []string{}
	lock.Lock()
	for n := range ExistingTensors {
		tensors = append(tensors, n)
	}
	memUsed := AllocatedMem
	lock.Unlock()
`, `	tensors := LiveTensors()
	memUsed := atomic.LoadInt64(&AllocatedMem)
`},
		[2]string{`	msg += fmt.Sprintf("Tensors not been released: %q\n", tensors)`, `	msg += fmt.Sprintf("Tensors not been released: %d\n", tensors)`},
		[2]string{`	lock.Lock()
	defer lock.Unlock()

	if _, ok := ExistingTensors[ts.name]; !ok {
		log.Printf("WARNING: Probably double free tensor %q. Called from %q. Just skipping...\n", ts.name, ts.calledFrom)

		return nil
	}

`, ``},
		[2]string{`	delete(ExistingTensors, ts.name)
`, `	atomic.AddInt64(&liveTensors, -1)
`},
		[2]string{`	ts.calledFrom = "ts.Drop()"
	return freeCTensor(ts)`, `	return freeCTensor(ts)`},
	)
}

// patchScalar drops the scalar registry and its mutex the same way.
func patchScalar(src []byte) ([]byte, error) {
	return edits(src,
		[2]string{`	lock.Lock()
	delete(ExistingScalars, x.name)
	lock.Unlock()
`, `	atomic.AddInt64(&liveScalars, -1)
`},
		[2]string{`	lock.Lock()
	x.name = newName(nameOpt...)
	ExistingScalars[x.name] = struct{}{}
	lock.Unlock()
`, `	atomic.AddInt64(&liveScalars, 1)
	if gotch.Debug {
		x.name = newName(nameOpt...)
	}
`},
	)
}
