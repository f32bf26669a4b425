package main

// The app description: the same keys as examples/llb-frontend's app.toml
// (README.md there has the table), read from TOML, or from JSON when the
// file name ends in .json.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// App is one parsed description.  Maps become sorted lists where order
// matters for the LLB: the same description must always give the same op
// digests, or nothing would ever be cached.
type App struct {
	Name       string
	Base       string
	Pull       bool
	Workdir    string
	Env        map[string]string
	User       string
	Cmd        []string
	Entrypoint []string
	Labels     map[string]string
	Expose     []string
	StopSignal string
	Steps      []Step
}

// Step is one [[steps]] table; Kind is which of the step keys it has.
type Step struct {
	Kind    string // copy, mkdir, file, symlink, run
	Name    string // the vertex's display name, if the step sets one
	Path    string // copy: the source; mkdir/file/symlink: the path in the image
	To      string // copy: the destination, absolute (a trailing / kept)
	Target  string // symlink
	Content string // file
	Owner   string
	Mode    *uint32 // nil: the default (copy: keep the source's mode)
	Run     []string
	RunText string // how a run step is shown: the string, or the argv as JSON
	Env     map[string]string
	User    string
	Cwd     string
	Network string // sandbox, none, host
	Cache   []string
	Tmpfs   []string
}

// SpecError says what is wrong with the description, naming the key.
type SpecError struct{ msg string }

func (e *SpecError) Error() string { return e.msg }

func specErrorf(format string, a ...any) error { return &SpecError{fmt.Sprintf(format, a...)} }

var (
	stepKinds = []string{"copy", "mkdir", "file", "symlink", "run"}
	ownerRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$`)
	modeRE    = regexp.MustCompile(`^0?o?[0-7]{1,4}$`)
)

// stripComments drops the leading lines that start with '#': the
// `# syntax=IMAGE` line that routes the file to this frontend (TOML reads
// it as a comment anyway; JSON has no comments).
func stripComments(dt []byte) []byte {
	for {
		trimmed := bytes.TrimLeft(dt, " \t\r\n")
		if !bytes.HasPrefix(trimmed, []byte("#")) {
			return dt
		}
		nl := bytes.IndexByte(trimmed, '\n')
		if nl < 0 {
			return nil
		}
		dt = trimmed[nl+1:]
	}
}

// ParseApp reads filename's contents (TOML, or JSON for *.json).
func ParseApp(filename string, dt []byte) (*App, error) {
	raw := map[string]any{}
	var err error
	if strings.HasSuffix(filename, ".json") {
		dec := json.NewDecoder(bytes.NewReader(stripComments(dt)))
		dec.UseNumber()
		err = dec.Decode(&raw)
	} else {
		err = toml.Unmarshal(dt, &raw)
	}
	if err != nil {
		return nil, specErrorf("%s: %v", filename, err)
	}
	return appFrom(raw)
}

func appFrom(raw map[string]any) (*App, error) {
	a := &App{}
	var err error
	if a.Base, err = str(raw, "base", "base"); err != nil {
		return nil, err
	}
	if a.Base == "" {
		return nil, specErrorf(`base: the base image is required (e.g. base = "localhost/busybox:latest")`)
	}
	if a.Name, err = str(raw, "name", "name"); err != nil {
		return nil, err
	}
	if a.Name == "" {
		a.Name = "app"
	}
	if v, ok := raw["pull"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return nil, specErrorf("pull: expected true or false")
		}
		a.Pull = b
	}
	if a.Workdir, err = str(raw, "workdir", "workdir"); err != nil {
		return nil, err
	}
	if a.Workdir != "" && !path.IsAbs(a.Workdir) {
		return nil, specErrorf("workdir: expected an absolute path in the image")
	}
	if a.Env, err = strMap(raw, "env", "env"); err != nil {
		return nil, err
	}
	if a.Labels, err = strMap(raw, "labels", "labels"); err != nil {
		return nil, err
	}
	if a.User, err = owner(raw, "user", "user"); err != nil {
		return nil, err
	}
	if a.Cmd, _, err = command(raw["cmd"], "cmd"); err != nil {
		return nil, err
	}
	if a.Entrypoint, _, err = command(raw["entrypoint"], "entrypoint"); err != nil {
		return nil, err
	}
	if a.StopSignal, err = str(raw, "stopsignal", "stopsignal"); err != nil {
		return nil, err
	}
	if v, ok := raw["expose"]; ok {
		ports, isList := v.([]any)
		if !isList {
			return nil, specErrorf(`expose: expected a list of ports (8080 or "53/udp")`)
		}
		for i, p := range ports {
			s := scalar(p)
			if s == "" {
				return nil, specErrorf("expose[%d]: expected a port (8080 or \"53/udp\")", i)
			}
			if !strings.Contains(s, "/") {
				s += "/tcp"
			}
			a.Expose = append(a.Expose, s)
		}
	}
	steps, ok := raw["steps"]
	if !ok {
		return a, nil
	}
	list, isList := steps.([]any)
	if !isList {
		return nil, specErrorf("steps: expected a list of tables ([[steps]])")
	}
	for i, s := range list {
		m, isMap := s.(map[string]any)
		if !isMap {
			return nil, specErrorf("steps[%d]: expected a table", i)
		}
		st, err := stepFrom(m, fmt.Sprintf("steps[%d]", i), a.Workdir)
		if err != nil {
			return nil, err
		}
		a.Steps = append(a.Steps, st)
	}
	return a, nil
}

func stepFrom(m map[string]any, where, workdir string) (Step, error) {
	var s Step
	var kinds []string
	for _, k := range stepKinds {
		if _, ok := m[k]; ok {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) != 1 {
		return s, specErrorf("%s: exactly one of %s (got %v)", where, strings.Join(stepKinds, ", "), kinds)
	}
	s.Kind = kinds[0]
	var err error
	if s.Name, err = str(m, "name", where+".name"); err != nil {
		return s, err
	}
	if s.Owner, err = owner(m, "owner", where+".owner"); err != nil {
		return s, err
	}
	if s.Mode, err = mode(m, where+".mode"); err != nil {
		return s, err
	}
	switch s.Kind {
	case "copy":
		src, err := str(m, "copy", where+".copy")
		if err != nil {
			return s, err
		}
		if s.Path, err = contextPath(src, where+".copy"); err != nil {
			return s, err
		}
		to, err := str(m, "to", where+".to")
		if err != nil {
			return s, err
		}
		if to == "" {
			return s, specErrorf("%s.to: where the copy goes is required", where)
		}
		if !path.IsAbs(to) {
			dir := workdir
			if dir == "" {
				dir = "/"
			}
			joined := path.Join(dir, to)
			if strings.HasSuffix(to, "/") {
				joined += "/"
			}
			to = joined
		}
		s.To = to
		s.RunText = src // shown as COPY SRC DEST, as the description says it
	case "mkdir", "file", "symlink":
		if s.Path, err = str(m, s.Kind, where+"."+s.Kind); err != nil {
			return s, err
		}
		if !path.IsAbs(s.Path) {
			return s, specErrorf("%s.%s: expected an absolute path in the image", where, s.Kind)
		}
		if s.Kind == "file" {
			if s.Content, err = str(m, "content", where+".content"); err != nil {
				return s, err
			}
		}
		if s.Kind == "symlink" {
			if s.Target, err = str(m, "target", where+".target"); err != nil {
				return s, err
			}
			if s.Target == "" {
				return s, specErrorf("%s.target: the link's target is required", where)
			}
		}
	case "run":
		if s.Run, s.RunText, err = command(m["run"], where+".run"); err != nil {
			return s, err
		}
		if s.Env, err = strMap(m, "env", where+".env"); err != nil {
			return s, err
		}
		if s.User, err = owner(m, "user", where+".user"); err != nil {
			return s, err
		}
		if s.Cwd, err = str(m, "workdir", where+".workdir"); err != nil {
			return s, err
		}
		if s.Cwd == "" {
			s.Cwd = workdir
		}
		if s.Cwd == "" {
			s.Cwd = "/"
		}
		if !path.IsAbs(s.Cwd) {
			return s, specErrorf("%s.workdir: expected an absolute path in the image", where)
		}
		if s.Network, err = str(m, "network", where+".network"); err != nil {
			return s, err
		}
		switch s.Network {
		case "":
			s.Network = "sandbox"
		case "sandbox", "none", "host":
		default:
			return s, specErrorf("%s.network: one of sandbox, none, host", where)
		}
		if s.Cache, err = absList(m, "cache", where+".cache"); err != nil {
			return s, err
		}
		if s.Tmpfs, err = absList(m, "tmpfs", where+".tmpfs"); err != nil {
			return s, err
		}
	}
	return s, nil
}

// scalar is a TOML/JSON string, integer, float or boolean as text ("" for
// anything else).
func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

func str(m map[string]any, key, where string) (string, error) {
	v, ok := m[key]
	if !ok {
		return "", nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", specErrorf("%s: expected a string", where)
	}
	return s, nil
}

func strMap(m map[string]any, key, where string) (map[string]string, error) {
	out := map[string]string{}
	v, ok := m[key]
	if !ok {
		return out, nil
	}
	t, isMap := v.(map[string]any)
	if !isMap {
		return nil, specErrorf("%s: expected a table of strings", where)
	}
	for k, x := range t {
		s := scalar(x)
		if _, isStr := x.(string); s == "" && !isStr {
			return nil, specErrorf("%s.%s: expected a string", where, k)
		}
		out[k] = s
	}
	return out, nil
}

func owner(m map[string]any, key, where string) (string, error) {
	v, ok := m[key]
	if !ok {
		return "", nil
	}
	s := scalar(v)
	if !ownerRE.MatchString(s) {
		return "", specErrorf("%s: expected USER[:GROUP] (names or numeric IDs)", where)
	}
	return s, nil
}

func mode(m map[string]any, where string) (*uint32, error) {
	v, ok := m["mode"]
	if !ok {
		return nil, nil
	}
	var n uint64
	var err error
	switch x := v.(type) {
	case int64:
		n = uint64(x)
	case json.Number:
		n, err = strconv.ParseUint(x.String(), 10, 32)
	case string:
		if !modeRE.MatchString(x) {
			err = fmt.Errorf("not octal")
		} else {
			n, err = strconv.ParseUint(strings.ReplaceAll(x, "o", ""), 8, 32)
		}
	default:
		err = fmt.Errorf("not a mode")
	}
	if err != nil || n > 0o7777 {
		return nil, specErrorf(`%s: expected an octal mode such as "0755"`, where)
	}
	m32 := uint32(n)
	return &m32, nil
}

// command: a string is the shell form (/bin/sh -c), a list the exec form.
// Also returns how to show it.
func command(v any, where string) ([]string, string, error) {
	switch x := v.(type) {
	case nil:
		return nil, "", nil
	case string:
		return []string{"/bin/sh", "-c", x}, x, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, isStr := e.(string)
			if !isStr {
				return nil, "", specErrorf("%s: expected a string (shell form) or a list of strings", where)
			}
			out = append(out, s)
		}
		shown, _ := json.Marshal(out)
		return out, string(shown), nil
	}
	return nil, "", specErrorf("%s: expected a string (shell form) or a list of strings", where)
}

func absList(m map[string]any, key, where string) ([]string, error) {
	v, ok := m[key]
	if !ok {
		return nil, nil
	}
	list, isList := v.([]any)
	if !isList {
		return nil, specErrorf("%s: expected a list of absolute paths", where)
	}
	var out []string
	for _, e := range list {
		s, isStr := e.(string)
		if !isStr || !path.IsAbs(s) {
			return nil, specErrorf("%s: expected a list of absolute paths", where)
		}
		out = append(out, s)
	}
	return out, nil
}

// contextPath is a copy source as a clean path relative to the context
// directory ("" for all of it).
func contextPath(src, where string) (string, error) {
	if src == "" {
		return "", specErrorf("%s: expected a path in the context directory", where)
	}
	p := path.Clean("/" + strings.TrimLeft(src, "/"))
	for _, part := range strings.Split(strings.TrimLeft(src, "/"), "/") {
		if part == ".." {
			return "", specErrorf("%s: %q leaves the context directory", where, src)
		}
	}
	return strings.TrimPrefix(p, "/"), nil
}
