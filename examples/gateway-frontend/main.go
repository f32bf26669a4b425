// podsolve-example-frontend is a BuildKit gateway frontend: the builder
// (podsolved, or buildkitd) runs it from an image, serves BuildKit's
// LLBBridge gRPC API on its stdin/stdout, and passes the build's frontend
// options in the environment (grpcclient.RunFromEnvironment's contract:
// BUILDKIT_FRONTEND_OPT_<n>=key=value, BUILDKIT_SESSION_ID,
// BUILDKIT_WORKERS, BUILDKIT_EXPORTEDPRODUCT).
//
// It builds an image from a small app description (app.toml; the format
// of examples/llb-frontend) instead of a Dockerfile: it reads the file
// from the client through the bridge, turns it into LLB, solves that, and
// returns the result with the image config as containerimage.config.  See
// README.md beside this file.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/frontend/gateway/grpcclient"
	"github.com/moby/buildkit/util/appcontext"
	_ "github.com/moby/buildkit/util/grpcutil/encoding/proto" // the codec BuildKit's own frontends use
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// The frontend option naming the description, as for the Dockerfile
	// frontend (buildctl --opt filename=…, docker buildx build -f …).
	keyFilename     = "filename"
	keyPlatform     = "platform"
	defaultFilename = "app.toml"
	// The local source the description is read from: the directory the
	// client sends as "dockerfile" (buildctl --local dockerfile=DIR; buildx
	// sends the directory of -f, or the context).
	specLocal = "dockerfile"
	progName  = "podsolve-example-frontend"
)

// version is stamped at link time (-X main.version=…).
var version = "dev"

// gatewayEnv are the variables a BuildKit gateway always sets
// (frontend/gateway/gateway.go); none of them set means nobody is serving
// the bridge on stdin.
var gatewayEnv = []string{"BUILDKIT_SESSION_ID", "BUILDKIT_WORKERS", "BUILDKIT_EXPORTEDPRODUCT"}

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-version]\n\n"+
			"A BuildKit gateway frontend: run by the builder from its image, never by hand.\n"+
			"Put '# syntax=localhost/podsolve-example-frontend' at the top of an app.toml, or\n"+
			"build with --frontend gateway.v0 --opt source=localhost/podsolve-example-frontend.\n", progName)
	}
	flag.Parse()
	if *showVersion {
		fmt.Printf("%s %s\n", progName, version)
		return
	}
	if err := checkGatewayEnvironment(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", progName, err)
		os.Exit(2)
	}
	if err := grpcclient.RunFromEnvironment(appcontext.Context(), build); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", progName, err)
		os.Exit(1)
	}
}

// checkGatewayEnvironment fails at once when the program is clearly not
// run by a builder, instead of speaking HTTP/2 to a terminal or to an
// empty stdin until gRPC's ping times out.
func checkGatewayEnvironment() error {
	set := false
	for _, k := range gatewayEnv {
		if _, ok := os.LookupEnv(k); ok {
			set = true
		}
	}
	if !set {
		return fmt.Errorf("not started by a BuildKit gateway: %s are unset.  This is a gateway frontend: "+
			"the builder runs it from its image and serves BuildKit's LLBBridge API on its stdin/stdout "+
			"(use '# syntax=localhost/podsolve-example-frontend' in app.toml, or --frontend gateway.v0 "+
			"--opt source=localhost/podsolve-example-frontend)", strings.Join(gatewayEnv, ", "))
	}
	// The bridge comes over a pipe or a socket; a character device (a
	// terminal, /dev/null) never carries it.
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("stdin is a terminal or a device, not the builder's pipe: " +
			"the builder must serve BuildKit's LLBBridge API on it")
	}
	return nil
}

// build is the client.BuildFunc: description in, image out.
func build(ctx context.Context, c client.Client) (*client.Result, error) {
	opts := c.BuildOpts()
	filename := opts.Opts[keyFilename]
	if filename == "" {
		filename = defaultFilename
	}
	filename = strings.TrimPrefix(path.Clean("/"+filename), "/")
	platform, err := targetPlatform(opts)
	if err != nil {
		return nil, err
	}

	dt, err := readSpec(ctx, c, filename)
	if err != nil {
		return nil, err
	}
	app, err := ParseApp(filename, dt)
	if err != nil {
		return nil, err
	}
	st, err := Plan(app, platform, opts.SessionID)
	if err != nil {
		return nil, err
	}
	def, err := st.Marshal(ctx, llb.Platform(platform))
	if err != nil {
		return nil, fmt.Errorf("marshal LLB: %w", err)
	}
	res, err := c.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
	if err != nil {
		return nil, err
	}
	config, err := ImageConfig(app, platform)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	// One platform: the ref and its config under the plain keys, as the
	// Dockerfile frontend returns a single-platform build.
	res.AddMeta(exptypes.ExporterImageConfigKey, config)
	return res, nil
}

// readSpec fetches filename from the client's "dockerfile" local and
// nothing else from that directory.
func readSpec(ctx context.Context, c client.Client, filename string) ([]byte, error) {
	src := llb.Local(specLocal,
		llb.SessionID(c.BuildOpts().SessionID),
		llb.IncludePatterns([]string{filename}),
		llb.SharedKeyHint(filename),
		llb.WithCustomName("[internal] load app description "+filename))
	def, err := src.Marshal(ctx)
	if err != nil {
		return nil, fmt.Errorf("marshal the %s local: %w", specLocal, err)
	}
	res, err := c.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", filename, err)
	}
	ref, err := res.SingleRef()
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", filename, err)
	}
	if ref == nil {
		return nil, fmt.Errorf("load %s: the %q local is empty", filename, specLocal)
	}
	dt, err := ref.ReadFile(ctx, client.ReadRequest{Filename: filename})
	if err != nil {
		return nil, fmt.Errorf("read %s from the %q local (the directory the client sends for -f / "+
			"--local dockerfile=DIR): %w", filename, specLocal, err)
	}
	return dt, nil
}

// targetPlatform: the "platform" option when the client sets one (a single
// platform: this frontend builds one image), else the first worker's
// platform, else the frontend's own.
func targetPlatform(opts client.BuildOpts) (ocispecs.Platform, error) {
	if v := opts.Opts[keyPlatform]; v != "" {
		if strings.Contains(v, ",") {
			return ocispecs.Platform{}, fmt.Errorf("platform %q: this frontend builds one platform", v)
		}
		p, err := platforms.Parse(v)
		if err != nil {
			return ocispecs.Platform{}, fmt.Errorf("platform %q: %w", v, err)
		}
		return platforms.Normalize(p), nil
	}
	if len(opts.Workers) > 0 && len(opts.Workers[0].Platforms) > 0 {
		return platforms.Normalize(opts.Workers[0].Platforms[0]), nil
	}
	return platforms.DefaultSpec(), nil
}
