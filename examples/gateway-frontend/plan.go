package main

// From an App to LLB and an image config, op for op as
// examples/llb-frontend/frontend.py plans it, so one description gives the
// same image through either frontend.

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// The build context: the local source BuildKit clients send the
	// context directory as (buildctl --local context=DIR, buildx's PATH).
	contextLocal = "context"
)

var networks = map[string]pb.NetMode{"sandbox": pb.NetMode_UNSET, "none": pb.NetMode_NONE, "host": pb.NetMode_HOST}

// Plan is the LLB for a description: FROM the base, a mkdir for the
// workdir, then one op per step (FileOps, and ExecOps for run steps).
// sessionID names the client session the context is read from.
func Plan(a *App, platform ocispecs.Platform, sessionID string) (llb.State, error) {
	total := 1 + len(a.Steps)
	if a.Workdir != "" {
		total++
	}
	n := 1
	title := func(s string) llb.ConstraintsOpt {
		n++
		return llb.WithCustomNamef("[%d/%d] %s", n, total, s)
	}
	env := imageEnv(a)

	imgOpts := []llb.ImageOption{llb.Platform(platform), llb.WithCustomNamef("[1/%d] FROM %s", total, a.Base)}
	if a.Pull {
		imgOpts = append(imgOpts, llb.ResolveModeForcePull)
	}
	st := llb.Image(a.Base, imgOpts...)
	if a.Workdir != "" {
		st = st.File(llb.Mkdir(a.Workdir, 0o755, llb.WithParents(true)), title("WORKDIR "+a.Workdir))
	}

	var context *llb.State
	for i, s := range a.Steps {
		shown := func(def string) llb.ConstraintsOpt {
			if s.Name != "" {
				return title(s.Name)
			}
			return title(def)
		}
		switch s.Kind {
		case "copy":
			if context == nil {
				c := contextSource(a.Steps, sessionID)
				context = &c
			}
			info := &llb.CopyInfo{
				FollowSymlinks:      true,
				CopyDirContentsOnly: true,
				CreateDestPath:      true,
				AllowWildcard:       true,
			}
			if s.Mode != nil {
				info.Mode = &llb.ChmodOpt{Mode: os.FileMode(*s.Mode)}
			}
			opts := []llb.CopyOption{info}
			if s.Owner != "" {
				opts = append(opts, llb.WithUser(s.Owner))
			}
			st = st.File(llb.Copy(*context, "/"+s.Path, s.To, opts...),
				shown(fmt.Sprintf("COPY %s %s", s.RunText, s.To)))
		case "mkdir":
			var opts []llb.MkdirOption
			opts = append(opts, llb.WithParents(true))
			if s.Owner != "" {
				opts = append(opts, llb.WithUser(s.Owner))
			}
			st = st.File(llb.Mkdir(s.Path, fileMode(s.Mode, 0o755), opts...), shown("MKDIR "+s.Path))
		case "file":
			var opts []llb.MkfileOption
			if s.Owner != "" {
				opts = append(opts, llb.WithUser(s.Owner))
			}
			st = st.File(llb.Mkfile(s.Path, fileMode(s.Mode, 0o644), []byte(s.Content), opts...),
				shown("FILE "+s.Path))
		case "symlink":
			st = st.File(llb.Symlink(s.Target, s.Path), shown(fmt.Sprintf("SYMLINK %s -> %s", s.Path, s.Target)))
		case "run":
			runOpts := []llb.RunOption{
				llb.Args(s.Run),
				llb.Dir(s.Cwd),
				llb.Network(networks[s.Network]),
				shown("RUN " + s.RunText),
			}
			stepEnv := mergeEnv(env, s.Env)
			for _, kv := range stepEnv {
				k, v := splitEnv(kv)
				runOpts = append(runOpts, llb.AddEnv(k, v))
			}
			if s.User != "" {
				runOpts = append(runOpts, llb.User(s.User))
			}
			for _, p := range s.Cache {
				// one cache per app and path, kept by the builder across builds
				runOpts = append(runOpts, llb.AddMount(p, llb.Scratch(),
					llb.AsPersistentCacheDir(a.Name+":"+p, llb.CacheMountShared)))
			}
			for _, p := range s.Tmpfs {
				runOpts = append(runOpts, llb.AddMount(p, llb.Scratch(), llb.Tmpfs()))
			}
			st = st.Run(runOpts...).Root()
		default:
			return st, specErrorf("steps[%d]: unknown kind %q", i, s.Kind)
		}
	}
	return st, nil
}

// contextSource is the build context, limited to what the copy steps name:
// the client then sends nothing else, and a change to a file no step
// copies changes nothing.
func contextSource(steps []Step, sessionID string) llb.State {
	seen := map[string]bool{}
	var patterns []string
	whole := false
	for _, s := range steps {
		if s.Kind != "copy" {
			continue
		}
		if s.Path == "" {
			whole = true
		}
		if !seen[s.Path] {
			seen[s.Path] = true
			patterns = append(patterns, s.Path)
		}
	}
	sort.Strings(patterns)
	opts := []llb.LocalOption{
		llb.SessionID(sessionID),
		llb.SharedKeyHint(contextLocal),
		llb.WithCustomName("[internal] load build context"),
	}
	if !whole {
		opts = append(opts, llb.IncludePatterns(patterns))
	}
	return llb.Local(contextLocal, opts...)
}

// ImageConfig is the containerimage.config the exporter gets: an OCI image
// config as BuildKit's Dockerfile frontend hands it over (rootfs and
// history are the exporter's to fill in).  It is the whole config: the
// base image's own config is not read (PATH gets the usual default unless
// env sets it), as in examples/llb-frontend.
func ImageConfig(a *App, platform ocispecs.Platform) ([]byte, error) {
	img := ocispecs.Image{
		Platform: ocispecs.Platform{Architecture: platform.Architecture, OS: platform.OS, Variant: platform.Variant},
		RootFS:   ocispecs.RootFS{Type: "layers", DiffIDs: []digest.Digest{}},
	}
	c := &img.Config
	c.Env = imageEnv(a)
	c.Entrypoint = a.Entrypoint
	c.Cmd = a.Cmd
	c.WorkingDir = a.Workdir
	c.User = a.User
	if len(a.Labels) > 0 {
		c.Labels = a.Labels
	}
	if len(a.Expose) > 0 {
		c.ExposedPorts = map[string]struct{}{}
		for _, p := range a.Expose {
			c.ExposedPorts[p] = struct{}{}
		}
	}
	c.StopSignal = a.StopSignal
	return json.Marshal(img)
}

// imageEnv is the image's environment, which every run step also gets:
// PATH first (the description's, else the usual default), then the rest
// in key order.
func imageEnv(a *App) []string {
	path := defaultPath
	if p, ok := a.Env["PATH"]; ok {
		path = p
	}
	return append([]string{"PATH=" + path}, sortedEnv(a.Env, "PATH")...)
}

// sortedEnv is env as KEY=VALUE in key order, without skip.
func sortedEnv(env map[string]string, skip string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		if k != skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// mergeEnv is base with over applied: a key over sets replaces base's
// value in place, new keys follow in key order.
func mergeEnv(base []string, over map[string]string) []string {
	out := make([]string, 0, len(base)+len(over))
	done := map[string]bool{}
	for _, kv := range base {
		k, _ := splitEnv(kv)
		if v, ok := over[k]; ok {
			kv = k + "=" + v
			done[k] = true
		}
		out = append(out, kv)
	}
	for _, kv := range sortedEnv(over, "") {
		if k, _ := splitEnv(kv); !done[k] {
			out = append(out, kv)
		}
	}
	return out
}

func splitEnv(kv string) (string, string) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:]
		}
	}
	return kv, ""
}

func fileMode(m *uint32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m)
}
