package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/shared"
	"github.com/tokenbroker/tokenbroker/internal/testkit/redistest"
)

// Where the files under test are, relative to this package.
const (
	manifestDir   = "kubernetes"
	dockerfile    = "Dockerfile"
	deployDoc     = "../docs/deploy.md"
	kustomization = "kustomization.yaml"
	secretExample = "secret.example.yaml" // the Secrets' shape; never applied
)

// The objects the tests look for.
const (
	configMapName  = "tokenbroker-config"
	configKey      = "config.yaml"
	deploymentName = "tokenbroker"
	containerName  = "tokenbroker"
	grpcService    = "tokenbroker"
	httpService    = "tokenbroker-http"
	redisACLSecret = "redis-acl"
	redisACLKey    = "users.acl"
	redisACLUser   = "tokenbroker"
)

// secretRoots are the directories under which the config names files; the
// test moves them into a temporary directory to parse the config.
var secretRoots = []string{"/etc/tokenbroker", "/run/secrets/tokenbroker"}

// doc is one YAML document of a manifest.
type doc struct {
	File  string
	Index int
	Node  *yaml.Node
	header
}

func (d doc) String() string { return d.File + "#" + strconv.Itoa(d.Index) }

type header struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
}

// readDocs decodes every YAML document of file.
func readDocs(t *testing.T, file string) []doc {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []doc
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		d := doc{File: filepath.ToSlash(file), Index: i, Node: &n}
		if err := n.Decode(&d.header); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		docs = append(docs, d)
	}
	return docs
}

// manifests is every document of deploy/kubernetes/*.yaml.
type manifests []doc

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestDir, err)
	}
	var all manifests
	for _, f := range files {
		all = append(all, readDocs(t, f)...)
	}
	return all
}

// find decodes the one object of kind and name into v; the example Secrets
// are looked up only when kind is "Secret".
func (m manifests) find(t *testing.T, kind, name string, v any) doc {
	t.Helper()
	var found []doc
	for _, d := range m {
		if d.Kind == kind && d.Metadata.Name == name {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s %q in %s, found %d", kind, name, manifestDir, len(found))
	}
	if err := found[0].Node.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: %v", found[0], kind, name, err)
	}
	return found[0]
}

// TestManifestsParse checks that every document of every manifest parses
// and names itself, that they all live in the broker's namespace, and that
// the kustomization lists every manifest but the example Secrets.
func TestManifestsParse(t *testing.T) {
	m := loadManifests(t)
	for _, d := range m {
		var raw map[string]any
		if err := d.Node.Decode(&raw); err != nil {
			t.Errorf("%s: %v", d, err)
			continue
		}
		if raw == nil {
			t.Errorf("%s: empty document", d)
			continue
		}
		if d.APIVersion == "" || d.Kind == "" || d.Metadata.Name == "" {
			t.Errorf("%s: apiVersion %q, kind %q, metadata.name %q: want all three", d, d.APIVersion, d.Kind, d.Metadata.Name)
		}
		switch d.Kind {
		case "Namespace", "Kustomization":
		default:
			if d.Metadata.Namespace != "tokenbroker" {
				t.Errorf("%s: %s %s: metadata.namespace %q, want tokenbroker", d, d.Kind, d.Metadata.Name, d.Metadata.Namespace)
			}
		}
	}

	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	if err := readDocs(t, filepath.Join(manifestDir, kustomization))[0].Node.Decode(&k); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range m {
		f := path.Base(d.File)
		if f != kustomization && f != secretExample && !slices.Contains(want, f) {
			want = append(want, f)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s resources = %v, want every manifest but %s: %v", kustomization, k.Resources, secretExample, want)
	}
	if k.Namespace != "tokenbroker" {
		t.Errorf("%s namespace = %q, want tokenbroker", kustomization, k.Namespace)
	}
}

// brokerConfig is the ConfigMap's config.yaml, parsed by config.Parse with
// its files moved into a temporary directory.
type brokerConfig struct {
	*config.Config
	// files are the files the config names, by their path in the pod, each
	// with how the broker reads it.
	files map[string]fileUse
}

// fileUse says how the broker checks a file's mode.
type fileUse int

const (
	// public: read without a mode check (certificates, CAs, the config).
	public fileUse = iota
	// ownerOnly: refused when group or others may read it (chmod 600).
	ownerOnly
	// groupReadable: a key file with allow_group_readable_key; refused only
	// when group or others may write it.
	groupReadable
)

func (u fileUse) String() string {
	return [...]string{"public", "owner-only", "group-readable"}[u]
}

// pathRE matches a path under one of secretRoots.
var pathRE = regexp.MustCompile(`(?:/etc/tokenbroker|/run/secrets/tokenbroker)(?:/[A-Za-z0-9._-]+)*`)

// parseConfig extracts config.yaml from the ConfigMap and parses it as the
// broker would, after moving every path under secretRoots into a temporary
// directory holding a placeholder file (mode 0600) for each.
func parseConfig(t *testing.T, m manifests) brokerConfig {
	t.Helper()
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	m.find(t, "ConfigMap", configMapName, &cm)
	text, ok := cm.Data[configKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", configMapName, configKey)
	}

	tmp := t.TempDir()
	for _, p := range pathRE.FindAllString(text, -1) {
		if slices.Contains(secretRoots, p) {
			continue // a directory, not a file
		}
		f := filepath.Join(tmp, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	moved := pathRE.ReplaceAllStringFunc(text, func(p string) string { return filepath.ToSlash(tmp) + p })

	cfg, err := config.Parse([]byte(moved), filepath.Join(tmp, "etc", "tokenbroker"))
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) && slices.ContainsFunc(ce.Problems, func(p config.Problem) bool {
			return p.Path == "cache.shared" && p.Msg == "unknown field"
		}) {
			t.Fatalf("this config package does not know cache.shared (go doc ./internal/config SharedCache):\n%v", err)
		}
		t.Fatalf("config.Parse of the ConfigMap's %s:\n%v", configKey, err)
	}

	files := map[string]fileUse{}
	add := func(p string, use fileUse) {
		if p == "" {
			return
		}
		rel, err := filepath.Rel(tmp, p)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("the config names %s, outside %v: the deployment mounts nothing there", p, secretRoots)
			return
		}
		files["/"+filepath.ToSlash(rel)] = use
	}
	if c := cfg.TLS; c != nil {
		add(c.CertFile, public)
		add(c.KeyFile, ownerOnly)
		add(c.ClientCAFile, public)
	}
	if a := cfg.Audit; a != nil && a.File != "-" {
		t.Errorf("audit.file is %s: the root filesystem is read-only; write the trail to \"-\" (stdout)", a.File)
	}
	for _, tn := range cfg.Tenants {
		add(tn.Upstream.ClientSecretFile, ownerOnly)
		for _, k := range tn.Keys {
			if k.State == config.KeyRetired {
				continue
			}
			use := ownerOnly
			if k.AllowGroupReadable {
				use = groupReadable
			}
			add(k.File, use)
			add(k.PassphraseFile, ownerOnly)
			if k.PKCS11 != nil {
				add(k.PKCS11.Module, public)
				add(k.PKCS11.PINFile, ownerOnly)
			}
		}
	}
	if s := cfg.Cache.Shared; s != nil {
		add(s.EncryptionKeyFile, ownerOnly)
		for _, f := range s.PreviousEncryptionKeyFiles {
			add(f, ownerOnly)
		}
		add(s.Redis.PasswordFile, ownerOnly)
		if r := s.Redis.TLS; r != nil {
			add(r.CAFile, public)
			add(r.CertFile, public)
			add(r.KeyFile, ownerOnly)
		}
	}
	return brokerConfig{Config: cfg, files: files}
}

// TestConfigParses checks that the ConfigMap's config.yaml is a valid
// config with the shared cache on, which is what the manifests are for.
func TestConfigParses(t *testing.T) {
	cfg := parseConfig(t, loadManifests(t))
	s := cfg.Cache.Shared
	if s == nil {
		t.Fatal("cache.shared is not set: the replicas would not share tokens")
	}
	if s.Redis.Addr == "" || s.EncryptionKeyFile == "" {
		t.Errorf("cache.shared = %+v: want a Redis address and an encryption key file", *s)
	}
	if cfg.TLS == nil {
		t.Error("no tls block: gRPC would be plaintext, allowed on loopback only")
	}
	if len(cfg.files) == 0 {
		t.Error("the config names no file: nothing to check the deployment against")
	}
}

// The parts of a Deployment the tests look at.
type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int64 `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		RunAsUser      *int64 `yaml:"runAsUser"`
		FSGroup        *int64 `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []spreadConstraint `yaml:"topologySpreadConstraints"`
	InitContainers            []container        `yaml:"initContainers"`
	Containers                []container        `yaml:"containers"`
	Volumes                   []volume           `yaml:"volumes"`
}

type spreadConstraint struct {
	TopologyKey       string `yaml:"topologyKey"`
	WhenUnsatisfiable string `yaml:"whenUnsatisfiable"`
}

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Command         []string        `yaml:"command"`
	Args            []string        `yaml:"args"`
	Ports           []containerPort `yaml:"ports"`
	StartupProbe    *probe          `yaml:"startupProbe"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []volumeMount `yaml:"volumeMounts"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a name or a number
	} `yaml:"httpGet"`
}

type volume struct {
	Name      string        `yaml:"name"`
	Secret    *secretSource `yaml:"secret"`
	ConfigMap *configSource `yaml:"configMap"`
	Projected *struct {
		DefaultMode *int `yaml:"defaultMode"`
		Sources     []struct {
			Secret    *secretSource `yaml:"secret"`
			ConfigMap *configSource `yaml:"configMap"`
		} `yaml:"sources"`
	} `yaml:"projected"`
	EmptyDir *struct {
		Medium string `yaml:"medium"`
	} `yaml:"emptyDir"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type secretSource struct {
	SecretName  string      `yaml:"secretName"` // in a volume
	Name        string      `yaml:"name"`       // in a projection
	DefaultMode *int        `yaml:"defaultMode"`
	Items       []keyToPath `yaml:"items"`
}

type configSource struct {
	Name        string      `yaml:"name"`
	DefaultMode *int        `yaml:"defaultMode"`
	Items       []keyToPath `yaml:"items"`
}

// objectKeys returns the keys of the ConfigMap or (example) Secret name.
func (m manifests) objectKeys(t *testing.T, kind, name string) []string {
	t.Helper()
	var obj struct {
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	m.find(t, kind, name, &obj)
	var keys []string
	for k := range obj.Data {
		keys = append(keys, k)
	}
	for k := range obj.StringData {
		keys = append(keys, k)
	}
	return keys
}

// projectedFiles returns the files (paths relative to the volume) a
// ConfigMap or Secret projects: its items, or else all its keys.
func (m manifests) projectedFiles(t *testing.T, kind, name string, items []keyToPath) []string {
	t.Helper()
	keys := m.objectKeys(t, kind, name)
	if len(items) == 0 {
		return keys
	}
	var files []string
	for _, it := range items {
		if !slices.Contains(keys, it.Key) {
			t.Errorf("%s %s has no key %q, which a volume projects as %s", kind, name, it.Key, it.Path)
		}
		files = append(files, it.Path)
	}
	return files
}

// source describes where a volume's files come from, for the checks.
type source struct {
	files []string // paths relative to the volume
	// fromAPI: a secret, configMap or projected volume, whose files the
	// kubelet writes with defaultMode, and with fsGroup makes 0440.
	fromAPI bool
	// defaultModes are the defaultMode of the volume and its sources, as
	// written (nil when left to the kubelet's 0644).
	defaultModes []*int
}

// volumeFiles returns what vol holds in pod p; an emptyDir holds what the
// init containers that write to it copy from their other volumes.
func (m manifests) volumeFiles(t *testing.T, p podSpec, vol volume) source {
	t.Helper()
	var s source
	switch {
	case vol.Secret != nil:
		s.fromAPI = true
		s.defaultModes = []*int{vol.Secret.DefaultMode}
		s.files = m.projectedFiles(t, "Secret", vol.Secret.SecretName, vol.Secret.Items)
	case vol.ConfigMap != nil:
		s.fromAPI = true
		s.defaultModes = []*int{vol.ConfigMap.DefaultMode}
		s.files = m.projectedFiles(t, "ConfigMap", vol.ConfigMap.Name, vol.ConfigMap.Items)
	case vol.Projected != nil:
		s.fromAPI = true
		s.defaultModes = []*int{vol.Projected.DefaultMode}
		for _, src := range vol.Projected.Sources {
			switch {
			case src.Secret != nil:
				s.files = append(s.files, m.projectedFiles(t, "Secret", src.Secret.Name, src.Secret.Items)...)
			case src.ConfigMap != nil:
				s.files = append(s.files, m.projectedFiles(t, "ConfigMap", src.ConfigMap.Name, src.ConfigMap.Items)...)
			}
		}
	case vol.EmptyDir != nil:
		// What runInitContainers checks the init containers do: copy
		// every file of their other volumes into it, flat.
		for _, ic := range p.InitContainers {
			if !slices.ContainsFunc(ic.VolumeMounts, func(vm volumeMount) bool { return vm.Name == vol.Name && !vm.ReadOnly }) {
				continue
			}
			for _, vm := range ic.VolumeMounts {
				if vm.Name == vol.Name {
					continue
				}
				src, ok := volumeByName(p, vm.Name)
				if !ok {
					t.Errorf("init container %s mounts volume %s, which the pod does not have", ic.Name, vm.Name)
					continue
				}
				for _, f := range m.volumeFiles(t, p, src).files {
					s.files = append(s.files, path.Base(f))
				}
			}
		}
	}
	return s
}

func volumeByName(p podSpec, name string) (volume, bool) {
	i := slices.IndexFunc(p.Volumes, func(v volume) bool { return v.Name == name })
	if i < 0 {
		return volume{}, false
	}
	return p.Volumes[i], true
}

// runInitContainers runs the script of each init container that fills an
// emptyDir with /bin/sh here, its mount paths moved into a temporary
// directory, from source volumes laid out as the kubelet lays them out (a
// timestamped directory, the ..data link, a link per file, each file 0440),
// and checks that every file the volume should hold arrives intact and
// readable by its owner alone.
func runInitContainers(t *testing.T, m manifests, pod podSpec) {
	sh, err := exec.LookPath("sh")
	if err != nil || runtime.GOOS == "windows" {
		t.Skip("no POSIX sh to run the init containers' scripts")
	}
	for _, ic := range pod.InitContainers {
		argv := append(slices.Clone(ic.Command), ic.Args...)
		if len(argv) != 3 || path.Base(argv[0]) != "sh" || argv[1] != "-c" {
			t.Errorf("init container %s: command %q is not sh -c SCRIPT; this test cannot run it", ic.Name, argv)
			continue
		}
		tmp := t.TempDir()
		mounts := slices.Clone(ic.VolumeMounts)
		slices.SortFunc(mounts, func(a, b volumeMount) int { return len(b.MountPath) - len(a.MountPath) }) // longest first
		script := argv[2]
		for _, vm := range mounts {
			script = strings.ReplaceAll(script, vm.MountPath, filepath.Join(tmp, vm.MountPath))
		}
		var targets []volume
		for _, vm := range mounts {
			vol, ok := volumeByName(pod, vm.Name)
			if !ok {
				t.Fatalf("init container %s mounts volume %s, which the pod does not have", ic.Name, vm.Name)
			}
			dir := filepath.Join(tmp, vm.MountPath)
			if vol.EmptyDir != nil {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				targets = append(targets, vol)
				continue
			}
			// The kubelet's atomic writer: files in a timestamped
			// directory, ..data pointing at it, a link per file.
			data := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
			if err := os.MkdirAll(data, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			for _, f := range m.volumeFiles(t, pod, vol).files {
				if err := os.MkdirAll(filepath.Join(data, filepath.Dir(f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(data, f), []byte("content of "+f+"\n"), 0o440); err != nil {
					t.Fatal(err)
				}
				top, _, _ := strings.Cut(f, "/")
				if _, err := os.Lstat(filepath.Join(dir, top)); err == nil {
					continue
				}
				if err := os.Symlink(filepath.Join("..data", top), filepath.Join(dir, top)); err != nil {
					t.Fatal(err)
				}
			}
		}
		cmd := exec.Command(sh, "-c", script)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("init container %s: %v\n%s", ic.Name, err, out)
			continue
		}
		for _, vol := range targets {
			vm := mounts[slices.IndexFunc(mounts, func(vm volumeMount) bool { return vm.Name == vol.Name })]
			for _, f := range m.volumeFiles(t, pod, vol).files {
				got := filepath.Join(tmp, vm.MountPath, f)
				fi, err := os.Lstat(got)
				if err != nil {
					t.Errorf("init container %s did not write %s: %v", ic.Name, path.Join(vm.MountPath, f), err)
					continue
				}
				if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
					t.Errorf("init container %s wrote %s with mode %s, want a regular file only its owner can read",
						ic.Name, path.Join(vm.MountPath, f), fi.Mode())
				}
				if b, err := os.ReadFile(got); err != nil || string(b) != "content of "+f+"\n" {
					t.Errorf("init container %s: %s holds %q, %v; want the source's content", ic.Name, path.Join(vm.MountPath, f), b, err)
				}
			}
		}
	}
}

// entrypointConfig returns the --config path of the Dockerfile's ENTRYPOINT.
func entrypointConfig(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ENTRYPOINT ")
		if !ok {
			continue
		}
		var argv []string
		if err := json.Unmarshal([]byte(rest), &argv); err != nil {
			t.Fatalf("%s: ENTRYPOINT is not an exec-form JSON array: %v", dockerfile, err)
		}
		for i, a := range argv {
			if (a == "--config" || a == "-config") && i+1 < len(argv) {
				if i < 1 || argv[1] != "serve" {
					t.Errorf("%s: ENTRYPOINT %v does not run serve", dockerfile, argv)
				}
				return argv[i+1]
			}
		}
		t.Fatalf("%s: ENTRYPOINT %v has no --config", dockerfile, argv)
	}
	t.Fatalf("%s has no ENTRYPOINT", dockerfile)
	return ""
}

// port returns the port of a host:port, failing the test if it has none.
func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return n
}

// TestDeploymentMatchesConfig checks the Deployment against the config it
// runs: every file the config names (and the config itself, where the
// image's ENTRYPOINT looks for it) is in a volume mounted at the file's
// directory, with a mode the broker accepts (the init container's copy is
// run here to see it); its ports are the listen ports; its probes ask
// /readyz and /healthz on the HTTP port; it outlasts shutdown_grace; its
// pods are hardened; and the Services and the budget fit it.
func TestDeploymentMatchesConfig(t *testing.T) {
	m := loadManifests(t)
	cfg := parseConfig(t, m)
	var d deployment
	m.find(t, "Deployment", deploymentName, &d)
	pod := d.Spec.Template.Spec
	ci := slices.IndexFunc(pod.Containers, func(c container) bool { return c.Name == containerName })
	if ci < 0 {
		t.Fatalf("Deployment %s has no container %s", deploymentName, containerName)
	}
	c := pod.Containers[ci]

	t.Run("mounts", func(t *testing.T) {
		files := map[string]fileUse{entrypointConfig(t): public}
		for f, use := range cfg.files {
			files[f] = use
		}
		for _, f := range slices.Sorted(maps.Keys(files)) {
			use := files[f]
			dir := path.Dir(f)
			mi := slices.IndexFunc(c.VolumeMounts, func(vm volumeMount) bool { return path.Clean(vm.MountPath) == dir })
			if mi < 0 {
				t.Errorf("%s (%s): no volumeMount at %s", f, use, dir)
				continue
			}
			vm := c.VolumeMounts[mi]
			if !vm.ReadOnly {
				t.Errorf("%s: volumeMount %s at %s is writable; mount it readOnly", f, vm.Name, vm.MountPath)
			}
			vol, ok := volumeByName(pod, vm.Name)
			if !ok {
				t.Errorf("%s: volumeMount %s names no volume of the pod", f, vm.Name)
				continue
			}
			src := m.volumeFiles(t, pod, vol)
			if !slices.Contains(src.files, path.Base(f)) {
				t.Errorf("%s: volume %s mounted at %s holds %v, not %s", f, vol.Name, dir, src.files, path.Base(f))
			}
			for _, mode := range src.defaultModes {
				if mode != nil && *mode != 0o400 {
					t.Errorf("%s: volume %s has defaultMode %#o, want 0400", f, vol.Name, *mode)
				}
			}
			// With fsGroup the kubelet makes every file of a secret,
			// configMap or projected volume 0440, group fsGroup.
			if use == ownerOnly && src.fromAPI && pod.SecurityContext.FSGroup != nil {
				t.Errorf("%s: the broker refuses it group-readable, but volume %s is a secret/configMap/projected volume, "+
					"which the kubelet makes 0440 under fsGroup %d: copy it into an emptyDir (as copy-secrets does)",
					f, vol.Name, *pod.SecurityContext.FSGroup)
			}
		}
	})

	t.Run("init", func(t *testing.T) { runInitContainers(t, m, pod) })

	t.Run("ports", func(t *testing.T) {
		for _, l := range []struct{ name, addr string }{{"grpc", cfg.Listen.GRPC}, {"http", cfg.Listen.HTTP}} {
			host, _, _ := net.SplitHostPort(l.addr)
			if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
				t.Errorf("listen.%s = %s: other pods cannot reach it; listen on 0.0.0.0", l.name, l.addr)
			}
			want := port(t, l.addr)
			pi := slices.IndexFunc(c.Ports, func(p containerPort) bool { return p.Name == l.name })
			switch {
			case pi < 0:
				t.Errorf("container %s has no port named %s (listen.%s = %s)", c.Name, l.name, l.name, l.addr)
			case c.Ports[pi].ContainerPort != want:
				t.Errorf("container port %s = %d, want %d (listen.%s = %s)", l.name, c.Ports[pi].ContainerPort, want, l.name, l.addr)
			}
		}
	})

	t.Run("probes", func(t *testing.T) {
		httpPort := strconv.Itoa(port(t, cfg.Listen.HTTP))
		for _, p := range []struct {
			name, path string
			probe      *probe
		}{
			{"readinessProbe", "/readyz", c.ReadinessProbe},
			{"livenessProbe", "/healthz", c.LivenessProbe},
			{"startupProbe", "", c.StartupProbe},
		} {
			switch {
			case p.probe == nil || p.probe.HTTPGet == nil:
				t.Errorf("%s: want an httpGet probe", p.name)
			case p.path != "" && p.probe.HTTPGet.Path != p.path:
				t.Errorf("%s asks %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
			case p.probe.HTTPGet.Port != "http" && p.probe.HTTPGet.Port != httpPort:
				t.Errorf("%s asks port %s, want the http port (http or %s)", p.name, p.probe.HTTPGet.Port, httpPort)
			}
		}
	})

	t.Run("pod", func(t *testing.T) {
		if d.Spec.Replicas < 3 {
			t.Errorf("replicas = %d, want at least 3", d.Spec.Replicas)
		}
		switch grace := pod.TerminationGracePeriodSeconds; {
		case grace == nil:
			t.Errorf("no terminationGracePeriodSeconds: the default 30s must exceed shutdown_grace (%s); say so", cfg.ShutdownGrace)
		case time.Duration(*grace)*time.Second <= cfg.ShutdownGrace:
			t.Errorf("terminationGracePeriodSeconds = %d, want more than shutdown_grace (%s)", *grace, cfg.ShutdownGrace)
		}
		sc := pod.SecurityContext
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile.Type != "RuntimeDefault" || sc.FSGroup == nil {
			t.Errorf("pod securityContext: want runAsNonRoot, fsGroup and the RuntimeDefault seccomp profile")
		}
		if !slices.ContainsFunc(pod.TopologySpreadConstraints, func(tc spreadConstraint) bool {
			return tc.TopologyKey == "kubernetes.io/hostname"
		}) {
			t.Error("no topologySpreadConstraint across nodes (kubernetes.io/hostname)")
		}
		for _, ctr := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			s := ctr.SecurityContext
			if s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation ||
				s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem ||
				!slices.Equal(s.Capabilities.Drop, []string{"ALL"}) {
				t.Errorf("container %s: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", ctr.Name)
			}
			if ctr.Resources.Requests["memory"] == "" || ctr.Resources.Limits["memory"] == "" {
				t.Errorf("container %s: want memory requests and limits", ctr.Name)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		var grpcSvc, httpSvc service
		m.find(t, "Service", grpcService, &grpcSvc)
		m.find(t, "Service", httpService, &httpSvc)
		if grpcSvc.Spec.ClusterIP != "None" || grpcSvc.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: clusterIP %q, publishNotReadyAddresses %v; want a headless service of ready pods",
				grpcService, grpcSvc.Spec.ClusterIP, grpcSvc.Spec.PublishNotReadyAddresses)
		}
		grpcPort := port(t, cfg.Listen.GRPC)
		for _, s := range []struct {
			name     string
			svc      service
			port     int
			portName string
		}{{grpcService, grpcSvc, grpcPort, "grpc"}, {httpService, httpSvc, port(t, cfg.Listen.HTTP), "http"}} {
			ok := slices.ContainsFunc(s.svc.Spec.Ports, func(p servicePort) bool {
				return p.Port == s.port && (p.TargetPort == s.portName || p.TargetPort == strconv.Itoa(s.port))
			})
			if !ok {
				t.Errorf("Service %s: want port %d to the container port %s", s.name, s.port, s.portName)
			}
			if s.svc.Spec.Selector["app.kubernetes.io/name"] != deploymentName {
				t.Errorf("Service %s selects %v, not the broker's pods", s.name, s.svc.Spec.Selector)
			}
		}

		var pdb struct {
			Spec struct {
				MinAvailable int `yaml:"minAvailable"`
			} `yaml:"spec"`
		}
		m.find(t, "PodDisruptionBudget", deploymentName, &pdb)
		if pdb.Spec.MinAvailable < 2 || pdb.Spec.MinAvailable >= d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget minAvailable = %d with %d replicas: want at least 2 and fewer than the replicas",
				pdb.Spec.MinAvailable, d.Spec.Replicas)
		}
	})
}

// The parts of a Service the tests look at.
type service struct {
	Spec struct {
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []servicePort     `yaml:"ports"`
	} `yaml:"spec"`
}

type servicePort struct {
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"` // a name or a number
}

// aclLine returns the example Redis ACL's rule for the broker's user, with
// its PASSWORD placeholder.
func aclLine(t *testing.T, m manifests) string {
	t.Helper()
	var s struct {
		StringData map[string]string `yaml:"stringData"`
	}
	m.find(t, "Secret", redisACLSecret, &s)
	for _, line := range strings.Split(s.StringData[redisACLKey], "\n") {
		if strings.HasPrefix(line, "user "+redisACLUser+" ") {
			return line
		}
	}
	t.Fatalf("Secret %s: %s has no rule for user %s", redisACLSecret, redisACLKey, redisACLUser)
	return ""
}

// episodes counts a Store's outage episodes: with a correct ACL there are
// none.
type episodes struct {
	mu     sync.Mutex
	causes []error
}

func (e *episodes) Episode(down bool, cause error) {
	if down {
		e.mu.Lock()
		e.causes = append(e.causes, cause)
		e.mu.Unlock()
	}
}

func (e *episodes) InvalidationDropped() {}

func (e *episodes) check(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.causes {
		t.Errorf("the shared cache gave up on Redis: %v", c)
	}
}

// TestRedisACL runs the shared cache's every Redis operation as a user
// with the documented ACL rule, against a real redis-server, and checks
// that the rule refuses what lies outside the broker's keys and channels.
// docs/deploy.md must give the same rule as secret.example.yaml.
func TestRedisACL(t *testing.T) {
	m := loadManifests(t)
	rule := aclLine(t, m)
	doc, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(rule)) {
		t.Errorf("%s does not give the ACL rule of %s:\n%s", deployDoc, secretExample, rule)
	}
	if !strings.Contains(rule, ">PASSWORD ") {
		t.Fatalf("the ACL rule has no >PASSWORD placeholder: %s", rule)
	}

	password := rand.Text()
	acl := filepath.Join(t.TempDir(), "users.acl")
	// The default user stays open for redistest's own PING.
	if err := os.WriteFile(acl, []byte("user default on nopass ~* &* +@all\n"+
		strings.Replace(rule, ">PASSWORD ", ">"+password+" ", 1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t, "--aclfile", acl)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	newStore := func() (*shared.Store, *episodes) {
		e := &episodes{}
		s, err := shared.New(shared.Config{Addr: srv.Addr(), Username: redisACLUser, Password: password,
			Timeout: 5 * time.Second, Metrics: e})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			e.check(t)
		})
		return s, e
	}
	a, _ := newStore()
	b, _ := newStore()

	if err := a.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	inv := b.Invalidations(ctx)

	// One replica takes the lease, renews it and stores; another waits.
	lease, won, err := a.TryLease(ctx, "n")
	if err != nil || !won {
		t.Fatalf("TryLease = %v, %v; want true, nil", won, err)
	}
	type waited struct {
		v   []byte
		ok  bool
		err error
	}
	wait := make(chan waited, 1)
	go func() {
		v, ok, err := b.Wait(ctx, "n")
		wait <- waited{v, ok, err}
	}()
	if err := lease.Extend(ctx); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	value := []byte("sealed value")
	if err := a.Set(ctx, "n", value, time.Minute); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if w := <-wait; w.err != nil || !w.ok || !bytes.Equal(w.v, value) {
		t.Fatalf("Wait = %q, %v, %v; want the stored value", w.v, w.ok, w.err)
	}
	if v, ok, err := a.Get(ctx, "n"); err != nil || !ok || !bytes.Equal(v, value) {
		t.Fatalf("Get = %q, %v, %v; want the stored value", v, ok, err)
	}

	// A rejected token: compare-and-delete, and the other replica hears of
	// it. b's subscription connects in the background, so an invalidation
	// sent before it is up is lost (as in production); try until one lands.
	deadline := time.After(10 * time.Second)
	for heard := false; !heard; {
		if err := a.Set(ctx, "n", value, time.Minute); err != nil {
			t.Fatalf("Set: %v", err)
		}
		if deleted, err := a.CompareAndDelete(ctx, "n", value); err != nil || !deleted {
			t.Fatalf("CompareAndDelete = %v, %v; want true, nil", deleted, err)
		}
		select {
		case name := <-inv:
			if name != "n" {
				t.Fatalf("invalidation of %q, want n", name)
			}
			heard = true
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("no invalidation reached the other replica: can the user subscribe to the tb:v1: channels?")
		}
	}

	// Outside its keys and channels, and the dangerous commands, the user
	// is refused.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: redisACLUser, Password: password})
	defer c.Close()
	for _, cmd := range []redis.Cmder{
		c.Get(ctx, "other-app:key"),
		c.Set(ctx, "other-app:key", "v", 0),
		c.Publish(ctx, "other-app:channel", "m"),
		c.Keys(ctx, "*"),
		c.FlushAll(ctx),
		c.ConfigGet(ctx, "*"),
	} {
		if err := cmd.Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%v as %s: %v, want NOPERM", cmd.Args(), redisACLUser, err)
		}
	}
}
