package main

// Offline checks of the description and the LLB (no builder needed):
//   go test ./...   (in examples/gateway-frontend)

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

var amd64 = ocispecs.Platform{OS: "linux", Architecture: "amd64"}

func sampleApp(t *testing.T) *App {
	t.Helper()
	dt, err := os.ReadFile("sample/app.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(dt), "# syntax=localhost/podsolve-example-frontend\n") {
		t.Fatalf("sample/app.toml must start with the syntax line, starts %q", strings.SplitN(string(dt), "\n", 2)[0])
	}
	a, err := ParseApp("app.toml", dt)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// ops is the marshalled graph: op digest -> op, plus the names.
func ops(t *testing.T, st llb.State) (map[string]*pb.Op, map[string]string, []byte) {
	t.Helper()
	def, err := st.Marshal(context.Background(), llb.Platform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*pb.Op{}
	names := map[string]string{}
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			t.Fatal(err)
		}
		out[string(dt)] = &op
	}
	for d, m := range def.Metadata {
		names[string(d)] = m.Description["llb.customname"]
	}
	// the ops in order: what the digests (and so the cache keys) come from
	var all []byte
	for _, dt := range def.Def {
		all = append(all, dt...)
	}
	return out, names, all
}

func TestSampleParsesWithTheSyntaxLine(t *testing.T) {
	a := sampleApp(t)
	if a.Base != "localhost/busybox:latest" || a.Name != "hello-gateway" || a.Workdir != "/app" {
		t.Fatalf("base/name/workdir: %+v", a)
	}
	if len(a.Steps) != 7 || a.Steps[1].Kind != "copy" || a.Steps[1].Path != "bin" || a.Steps[1].To != "/app/bin/" {
		t.Fatalf("steps: %+v", a.Steps)
	}
	if m := a.Steps[3].Mode; m == nil || *m != 0o640 {
		t.Fatalf("steps[3].mode: %v", m)
	}
}

func TestJSONWithASyntaxLine(t *testing.T) {
	dt := []byte("# syntax=localhost/podsolve-example-frontend\n" +
		`{"base": "localhost/busybox:latest", "cmd": "echo hi", "steps": [{"run": ["true"], "network": "none"}]}`)
	a, err := ParseApp("app.json", dt)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.Cmd, " ") != "/bin/sh -c echo hi" || a.Steps[0].Network != "none" {
		t.Fatalf("%+v", a)
	}
}

func TestPlanIsDeterministicAndNamesEveryOp(t *testing.T) {
	a := sampleApp(t)
	st1, err := Plan(a, amd64, "sess")
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := Plan(sampleApp(t), amd64, "sess")
	o1, names, ops1 := ops(t, st1)
	_, _, ops2 := ops(t, st2)
	if string(ops1) != string(ops2) {
		t.Fatal("the same description gave two different definitions: nothing would be cached")
	}
	var shown []string
	for _, n := range names {
		shown = append(shown, n)
	}
	all := strings.Join(shown, "\n")
	for _, want := range []string{"[1/9] FROM localhost/busybox:latest", "[2/9] WORKDIR /app",
		"[4/9] COPY bin/ /app/bin/", "[9/9] write the greeting as the app user", "[internal] load build context"} {
		if !strings.Contains(all, want) {
			t.Errorf("no op named %q in:\n%s", want, all)
		}
	}
	// the context sends only what is copied
	var local *pb.SourceOp
	for _, op := range o1 {
		if s := op.GetSource(); s != nil && strings.HasPrefix(s.Identifier, "local://") {
			local = s
		}
	}
	if local == nil || local.Identifier != "local://context" ||
		local.Attrs[pb.AttrIncludePatterns] != `["bin","config/app.conf"]` || local.Attrs[pb.AttrLocalSessionID] != "sess" {
		t.Fatalf("context source: %+v", local)
	}
}

func TestImageConfig(t *testing.T) {
	dt, err := ImageConfig(sampleApp(t), amd64)
	if err != nil {
		t.Fatal(err)
	}
	var img ocispecs.Image
	if err := json.Unmarshal(dt, &img); err != nil {
		t.Fatal(err)
	}
	c := img.Config
	if img.OS != "linux" || img.Architecture != "amd64" || c.User != "1000:1000" || c.WorkingDir != "/app" ||
		strings.Join(c.Cmd, " ") != "/app/bin/hello" || c.Labels["org.opencontainers.image.title"] != "hello-gateway" {
		t.Fatalf("config: %s", dt)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok || len(c.Env) != 2 || !strings.HasPrefix(c.Env[0], "PATH=") ||
		c.Env[1] != "GREETING=hello from a gateway frontend" {
		t.Fatalf("config: %s", dt)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	for spec, want := range map[string]string{
		`cmd = ["x"]`: "base: the base image is required",
		"base = \"b\"\n[[steps]]\ncopy = \"../x\"\nto = \"/\"":       `steps[0].copy: "../x" leaves the context directory`,
		"base = \"b\"\n[[steps]]\nrun = \"x\"\nmkdir = \"/y\"":       "steps[0]: exactly one of",
		"base = \"b\"\n[[steps]]\nmkdir = \"/y\"\nmode = \"999\"":    "steps[0].mode: expected an octal mode",
		"base = \"b\"\n[[steps]]\nrun = \"x\"\nnetwork = \"bridge\"": "steps[0].network: one of sandbox, none, host",
	} {
		_, err := ParseApp("app.toml", []byte(spec))
		var se *SpecError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", spec, err, want)
		}
	}
}
