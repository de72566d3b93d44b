// Command codesize keeps the code in rooms of one purpose: it lists every
// function longer than -max-func lines and every file longer than -max-file
// lines in the Go files under the given folders, and exits with status 1 when
// there is any. Generated files (a "Code generated ... DO NOT EDIT." line)
// are skipped; a function whose doc comment holds "codesize:long" followed by
// a reason (a bytecode machine's one switch, say) is allowed, and reported.
//
//	go run ./backend/internal/codesize backend cmd shared datasets results frontend-wasm
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// generated is the marker the Go tools define for generated files.
var generated = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

// allowMarker in a function's doc comment, with a reason after it, allows a
// long function.
const allowMarker = "codesize:long "

type finding struct {
	path  string
	where string
	lines int
	what  string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("codesize", flag.ContinueOnError)
	flags.SetOutput(stderr)
	maxFunc := flags.Int("max-func", 80, "longest function allowed, in lines")
	maxFile := flags.Int("max-file", 600, "longest file allowed, in lines")
	knownFile := flags.String("known", "", "the list of functions and files still over the limits (may not grow)")
	prune := flags.Bool("prune", false, "rewrite -known's file: drop the entries no longer over the limits, lower the others to their present size")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: codesize [-max-func N] [-max-file N] [-known FILE] folder...")
		return 2
	}
	var over, allowed []finding
	for _, root := range flags.Args() {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") {
				return nil
			}
			o, a, err := check(path, *maxFunc, *maxFile)
			over, allowed = append(over, o...), append(allowed, a...)
			return err
		})
		if err != nil {
			fmt.Fprintln(stderr, "codesize:", err)
			return 2
		}
	}
	known := map[string]int{}
	if *knownFile != "" {
		var err error
		if known, err = readKnown(*knownFile); err != nil {
			fmt.Fprintln(stderr, "codesize:", err)
			return 2
		}
	}
	for _, f := range allowed {
		fmt.Fprintf(stdout, "allowed: %s: %s is %d lines\n", f.where, f.what, f.lines)
	}
	if *prune && *knownFile != "" {
		if err := pruneKnown(*knownFile, over); err != nil {
			fmt.Fprintln(stderr, "codesize:", err)
			return 2
		}
		if known, err := readKnown(*knownFile); err == nil {
			return finish(stdout, report(stdout, over, known, *knownFile), *maxFunc, *maxFile)
		}
	}
	return finish(stdout, report(stdout, over, known, *knownFile), *maxFunc, *maxFile)
}

// finish prints the verdict and returns the exit status.
func finish(stdout io.Writer, bad, maxFunc, maxFile int) int {
	if bad > 0 {
		fmt.Fprintf(stdout, "codesize: %d findings: split what is over %d / %d lines\n", bad, maxFunc, maxFile)
		return 1
	}
	return 0
}

// pruneKnown rewrites the known list without the entries no longer over the
// limits, and lowers the others' sizes to what they are now (never raises
// them); comments stay as they are.
func pruneKnown(path string, over []finding) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read known list: %w", err)
	}
	now := map[string]int{}
	for _, f := range over {
		now[f.key()] = f.lines
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		parts := strings.Split(strings.TrimSpace(line), "\t")
		if len(parts) == 3 && !strings.HasPrefix(parts[0], "#") {
			n, ok := now[parts[0]+"\t"+parts[1]]
			if !ok {
				continue
			}
			var was int
			if _, err := fmt.Sscan(parts[2], &was); err == nil && n < was {
				line = parts[0] + "\t" + parts[1] + "\t" + fmt.Sprint(n)
			}
		}
		keep = append(keep, line)
	}
	return os.WriteFile(path, []byte(strings.Join(keep, "\n")+"\n"), 0o644)
}

// report prints what is over the limits and not known, and the known
// entries no longer over; it returns how many it printed.
func report(w io.Writer, over []finding, known map[string]int, knownFile string) int {
	sort.Slice(over, func(i, j int) bool { return over[i].lines > over[j].lines })
	bad, stillKnown, stillOver := 0, map[string]bool{}, map[string]bool{}
	for _, f := range over {
		k := f.key()
		stillOver[k] = true
		limit, ok := known[k]
		switch {
		case ok && f.lines <= limit:
			stillKnown[k] = true
			continue
		case ok:
			fmt.Fprintf(w, "%s: %s is %d lines, more than the %d it is known for\n", f.where, f.what, f.lines, limit)
		default:
			fmt.Fprintf(w, "%s: %s is %d lines\n", f.where, f.what, f.lines)
		}
		bad++
	}
	var gone []string
	for k := range known {
		if !stillOver[k] {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		bad++
		fmt.Fprintf(w, "%s: no longer over the limits (or gone): remove it from %s\n", strings.ReplaceAll(k, "\t", ": "), knownFile)
	}
	if len(stillKnown) > 0 {
		fmt.Fprintf(w, "codesize: %d known functions or files still over the limits\n", len(stillKnown))
	}
	return bad
}

// key names a finding independently of its line number.
func (f finding) key() string {
	return f.path + "\t" + f.what
}

// readKnown reads a -known list.
func readKnown(path string) (map[string]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read known list: %w", err)
	}
	known := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "\t")
		var n int
		if len(parts) == 3 {
			_, err = fmt.Sscan(parts[2], &n)
		}
		if len(parts) != 3 || err != nil || n <= 0 {
			return nil, fmt.Errorf("%s:%d: want path<TAB>name<TAB>lines, got %q", path, i+1, line)
		}
		known[parts[0]+"\t"+parts[1]] = n
	}
	return known, nil
}

// check parses one file and returns what is too long in it, and the long
// functions it allows.
func check(path string, maxFunc, maxFile int) (over, allowed []finding, err error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if generated.Match(src) {
		return nil, nil, nil
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if n := fset.Position(f.End()).Line; n > maxFile {
		over = append(over, finding{path, path, n, "the file"})
	}
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
		n := end.Line - start.Line + 1
		if n <= maxFunc {
			continue
		}
		name := fn.Name.Name
		if fn.Recv != nil && len(fn.Recv.List) == 1 {
			name = recvName(fn.Recv.List[0].Type) + "." + name
		}
		fd := finding{path, fmt.Sprintf("%s:%d", path, start.Line), n, name}
		if fn.Doc != nil && strings.Contains(fn.Doc.Text(), allowMarker) {
			allowed = append(allowed, fd)
		} else {
			over = append(over, fd)
		}
	}
	return over, allowed, nil
}

// recvName is the receiver's type name without pointer or type parameters.
func recvName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recvName(t.X)
	case *ast.IndexExpr:
		return recvName(t.X)
	case *ast.IndexListExpr:
		return recvName(t.X)
	case *ast.Ident:
		return t.Name
	}
	return "?"
}
