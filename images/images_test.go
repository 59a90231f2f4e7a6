package images

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deb is one of the four packages images/build makes.
type deb struct {
	name, arch string      // frank-hub, amd64
	machine    elf.Machine // what its binary is built for
	goarch     string      // the GOARCH that runs it natively
}

var debs = []deb{
	{"frank-kiosk", "arm64", elf.EM_AARCH64, "arm64"},
	{"frank-kiosk", "armhf", elf.EM_ARM, "arm"},
	{"frank-hub", "amd64", elf.EM_X86_64, "amd64"},
	{"frank-hub", "arm64", elf.EM_AARCH64, "arm64"},
}

func (d deb) file(version string) string { return d.name + "_" + version + "_" + d.arch + ".deb" }
func (d deb) short() string              { return strings.TrimPrefix(d.name, "frank-") } // hub, kiosk

// wantFiles are every regular file of each package and its mode, as
// dpkg-deb --contents prints them; all are root/root.
var wantFiles = map[string]map[string]string{
	"frank-kiosk": {
		"./usr/bin/frank-kiosk":                        "-rwxr-xr-x",
		"./usr/lib/systemd/system/frank-kiosk.service": "-rw-r--r--",
		// The postinst makes it 0640 root:frank-kiosk (it may hold staff
		// secrets); dpkg-deb shows the mode as built.
		"./etc/frank/kiosk.json":                                            "-rw-r--r--",
		"./etc/chromium/policies/managed/frank-kiosk.json":                  "-rw-r--r--",
		"./usr/lib/systemd/system/ssh.service.d/frank-kiosk-host-keys.conf": "-rw-r--r--",
		"./usr/lib/udev/rules.d/60-frank-kiosk.rules":                       "-rw-r--r--",
		"./etc/xdg/autostart/frank-touchscreen.desktop":                     "-rw-r--r--",
		"./usr/share/frank-kiosk/touchscreen":                               "-rwxr-xr-x",
	},
	"frank-hub": {
		"./usr/bin/frank-hub":                                  "-rwxr-xr-x",
		"./usr/lib/systemd/system/frank-hub.service":           "-rw-r--r--",
		"./etc/frank/hub.json":                                 "-rw-r--r--",
		"./usr/share/frank-hub/mosquitto/frank.conf":           "-rw-r--r--",
		"./usr/share/frank-hub/mosquitto/frank.acl":            "-rw-r--r--",
		"./usr/share/frank-hub/mosquitto/frank-passwords.conf": "-rw-r--r--",
		"./usr/share/frank-hub/mosquitto/README":               "-rw-r--r--",
	},
}

// need returns the path of a tool, or fails naming the Debian package
// that has it.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (make deps, as root)", tool, pkg)
	}
	return p
}

// run runs a command and returns its standard output; it fails the test
// with the command's output if the command fails.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = env
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// build runs images/build and says how long it took. --fast only lowers
// the xz level, which saves a minute a run.
func build(t *testing.T, out, version, only string) {
	t.Helper()
	need(t, "dpkg-deb", "dpkg")
	args := []string{"build", "--fast", "--version", version, "--out", out}
	if only != "" {
		args = append(args, "--only", only)
	}
	start := time.Now()
	run(t, nil, "bash", args...)
	t.Logf("images/build --version %s --only %q: %s", version, only, time.Since(start).Round(time.Second))
}

// debArch is the Debian name of the machine the tests run on.
func debArch(t *testing.T) string {
	t.Helper()
	switch runtime.GOARCH {
	case "amd64", "arm64":
		return runtime.GOARCH
	case "arm":
		return "armhf"
	}
	t.Fatalf("no frank-hub package for %s", runtime.GOARCH)
	return ""
}

// readmeConf returns the README's conf block that starts with the comment
// "# " + name, that comment line included, as the package ships it.
func readmeConf(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```conf\n(# " + regexp.QuoteMeta(name) + "\n.*?)```")
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("README.md has no conf block starting with # %s", name)
	}
	return string(m[1])
}

// unit reads a systemd unit into its directives; repeated ones keep every
// value in order.
func unit(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", path, line)
		}
		d[k] = append(d[k], v)
	}
	return d
}

// skipShort leaves packaging to the full pass: -short is the race pass,
// unit and in-process tests only, and nothing here runs concurrently.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("packages are built and installed in the full pass, not under -short")
	}
}

// The four packages have the control fields, files, modes, maintainer
// scripts and binaries they should; the units pass systemd-analyze, the
// configs pass the programs' own --check-config, and the mosquitto snippet
// is the README's.
func TestPackages(t *testing.T) {
	skipShort(t)
	need(t, "systemd-analyze", "systemd")
	out := t.TempDir()
	want := debs
	build(t, out, "1.2.3", "")

	for _, d := range want {
		t.Run(d.name+"_"+d.arch, func(t *testing.T) {
			path := filepath.Join(out, d.file("1.2.3"))
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
			checkControl(t, d, path)
			root := t.TempDir()
			run(t, nil, "dpkg-deb", "-x", path, root)
			checkContents(t, d, path, root)
			checkScripts(t, d, path, root)
			checkBinary(t, d, filepath.Join(root, "usr/bin", d.name))
			checkUnit(t, d, root)
			switch d.name {
			case "frank-hub":
				checkHubFiles(t, d, root)
			case "frank-kiosk":
				checkKioskFiles(t, root)
			}
		})
	}
}

func checkControl(t *testing.T, d deb, path string) {
	field := func(name string) string {
		return strings.TrimSpace(run(t, nil, "dpkg-deb", "-f", path, name))
	}
	for name, want := range map[string]string{
		"Package":      d.name,
		"Version":      "1.2.3",
		"Architecture": d.arch,
		"Maintainer":   "Frank Postage <ops@frank-postage.example>",
		"Priority":     "optional",
	} {
		if got := field(name); got != want {
			t.Errorf("%s: %s is %q, want %q", d.file("1.2.3"), name, got, want)
		}
	}
	wantDepends := "adduser | passwd"
	if d.name == "frank-hub" {
		wantDepends += ", libc6 (>= 2.36)"
	}
	if got := field("Depends"); got != wantDepends {
		t.Errorf("%s: Depends is %q, want %q", d.file("1.2.3"), got, wantDepends)
	}
	if d.name == "frank-kiosk" && !strings.Contains(field("Recommends"), "chromium") {
		t.Errorf("kiosk: Recommends %q, want chromium", field("Recommends"))
	}
	if d.name == "frank-hub" && !strings.Contains(field("Suggests"), "mosquitto") {
		t.Errorf("hub: Suggests %q, want mosquitto", field("Suggests"))
	}
	desc := strings.Split(field("Description"), "\n")
	if len(desc) < 3 || desc[0] == "" || len(desc[0]) > 80 {
		t.Errorf("Description wants a short first line and a paragraph, got %q", desc)
	}
	if n, err := strconv.Atoi(field("Installed-Size")); err != nil || n < 1000 {
		t.Errorf("Installed-Size %q, want the size in KiB", field("Installed-Size"))
	}
	for _, f := range []string{"Section", "Homepage"} {
		if field(f) == "" {
			t.Errorf("no %s", f)
		}
	}
}

// checkContents compares dpkg-deb --contents with wantFiles: the same
// regular files, those modes, everything root/root, nothing in /var (the
// postinst makes the state directory).
func checkContents(t *testing.T, d deb, path, root string) {
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, nil, "dpkg-deb", "--contents", path)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents: %q", line)
		}
		mode, owner, name := f[0], f[1], f[5]
		if owner != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", name, owner)
		}
		if strings.HasPrefix(name, "./var/") {
			t.Errorf("%s: the package ships nothing in /var", name)
		}
		switch mode[0] {
		case 'd':
			if mode != "drwxr-xr-x" {
				t.Errorf("directory %s is %s", name, mode)
			}
		case '-':
			got[name] = mode
		default:
			t.Errorf("%s is neither a file nor a directory: %s", name, mode)
		}
	}
	want := wantFiles[d.name]
	for name, mode := range want {
		if got[name] != mode {
			t.Errorf("%s: %s is %q, want %q", d.file("1.2.3"), name, got[name], mode)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s ships %s, which the test does not know", d.file("1.2.3"), name)
		}
	}
}

// checkScripts looks at DEBIAN: conffiles name exactly the /etc/frank
// config, md5sums match the files, and the maintainer scripts are POSIX sh
// that make the user, keep the data and restart on upgrade.
func checkScripts(t *testing.T, d deb, path, root string) {
	ctl := t.TempDir()
	run(t, nil, "dpkg-deb", "-e", path, ctl)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(ctl, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := read("conffiles"), "/etc/frank/"+d.short()+".json\n"; got != want {
		t.Errorf("conffiles: %q, want %q", got, want)
	}
	sums := strings.Split(strings.TrimSpace(read("md5sums")), "\n")
	if len(sums) != len(wantFiles[d.name]) {
		t.Errorf("md5sums lists %d files, want %d", len(sums), len(wantFiles[d.name]))
	}
	for _, line := range sums {
		sum, name, _ := strings.Cut(line, "  ")
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("md5sums: %v", err)
			continue
		}
		if h := md5.Sum(b); hex.EncodeToString(h[:]) != sum {
			t.Errorf("md5sums: %s does not match", name)
		}
	}
	state := "/var/lib/frank/" + d.short()
	for script, wants := range map[string][]string{
		"postinst": {"adduser --system --group", "useradd --system --user-group", state,
			"FRANK_SYSTEMCTL", "/run/systemd/system", "daemon-reload", "enable", "start", "restart"},
		"prerm":  {"stop " + d.name + ".service"},
		"postrm": {"purge", "kept " + state},
	} {
		p := filepath.Join(ctl, script)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s is %v, want 0755", script, fi.Mode().Perm())
		}
		text := read(script)
		if !strings.HasPrefix(text, "#!/bin/sh\n") || !strings.Contains(text, "\nset -e\n") {
			t.Errorf("%s: want #!/bin/sh and set -e", script)
		}
		run(t, nil, "sh", "-n", p)
		for _, w := range wants {
			if !strings.Contains(text, w) {
				t.Errorf("%s has no %q", script, w)
			}
		}
		// The state directory holds postal records and the sale journal.
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "rm ") && strings.Contains(line, "/var/lib/frank") {
				t.Errorf("%s removes state: %s", script, line)
			}
		}
	}
	if d.name == "frank-kiosk" {
		post := read("postinst")
		for _, w := range []string{"dialout", "gpio"} {
			if !strings.Contains(post, w) {
				t.Errorf("kiosk postinst does not add the user to %s", w)
			}
		}
		for _, w := range []string{"chmod 0640 /etc/frank/kiosk.json", `chown "root:$(id -gn "$user")" /etc/frank/kiosk.json`} {
			if !strings.Contains(post, w) {
				t.Errorf("kiosk postinst has no %q: kiosk.json may hold staff secrets", w)
			}
		}
	}
}

// checkBinary: the right machine, static (kiosk) or with cgo (hub), the version linked in,
// and, where this machine runs it, --version prints it.
func checkBinary(t *testing.T, d deb, path string) {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != d.machine {
		t.Errorf("%s is for %v, want %v", path, f.Machine, d.machine)
	}
	// The kiosk is static; the hub links libc for its PKCS#11 HSM.
	cgo := d.name == "frank-hub"
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	if dynamic != cgo {
		t.Errorf("%s: dynamically linked %v, want %v", path, dynamic, cgo)
	}
	// -trimpath leaves -ldflags out of the build info: look for the string.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("1.2.3")) {
		t.Errorf("%s does not contain its version 1.2.3", path)
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	wantCgo := "0"
	if cgo {
		wantCgo = "1"
	}
	for k, want := range map[string]string{"CGO_ENABLED": wantCgo, "GOOS": "linux", "GOARCH": d.goarch, "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("%s built with %s=%q, want %q", path, k, settings[k], want)
		}
	}
	if d.goarch == "arm" && settings["GOARM"] != "7" {
		t.Errorf("%s built with GOARM=%q, want 7", path, settings["GOARM"])
	}
	if d.goarch == runtime.GOARCH {
		out := strings.Fields(run(t, nil, path, "--version"))
		if len(out) == 0 || out[len(out)-1] != "1.2.3" {
			t.Errorf("%s --version printed %q, want the version 1.2.3", path, out)
		}
	}
}

// checkUnit: the service is hardened and restarts, runs as its own user
// with its state directory, reads the packaged config, and passes
// systemd-analyze verify and an exposure score.
func checkUnit(t *testing.T, d deb, root string) {
	path := filepath.Join(root, "usr/lib/systemd/system", d.name+".service")
	u := unit(t, path)
	state := "frank/" + d.short()
	for k, want := range map[string]string{
		"Type":                    "simple",
		"User":                    d.name,
		"ExecStart":               "/usr/bin/" + d.name + " --config /etc/frank/" + d.short() + ".json",
		"Restart":                 "on-failure",
		"StateDirectory":          state,
		"ReadWritePaths":          "/var/lib/" + state,
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"NoNewPrivileges":         "yes",
		"PrivateTmp":              "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"After":                   "network-online.target time-sync.target",
		"Wants":                   "network-online.target",
		"WantedBy":                "multi-user.target",
	} {
		if got := u[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s: %s=%q, want %q", d.name, k, got, want)
		}
	}
	if len(u["RestartSec"]) != 1 {
		t.Errorf("%s: no RestartSec", d.name)
	}
	if d.name == "frank-kiosk" {
		if got := u["DevicePolicy"]; len(got) != 1 || got[0] != "closed" {
			t.Errorf("kiosk: DevicePolicy=%q, want closed", got)
		}
		// What the kiosk opens with the packaged config, the unit allows.
		var c struct {
			Printer struct{ Path string }
			Devices struct {
				Scale, Scanner, Terminal struct{ Path string }
				GPIO                     string
			}
		}
		b, err := os.ReadFile(filepath.Join(root, "etc/frank/kiosk.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		allow := u["DeviceAllow"]
		for _, dev := range []string{c.Printer.Path, c.Devices.Scale.Path, c.Devices.Scanner.Path, c.Devices.Terminal.Path} {
			if !slices.Contains(allow, dev+" rw") {
				t.Errorf("kiosk.json names %s; DeviceAllow %q does not allow it", dev, allow)
			}
		}
		for _, class := range []string{"char-ttyUSB rw", "char-ttyACM rw"} {
			if !slices.Contains(allow, class) {
				t.Errorf("kiosk: DeviceAllow lacks %s (USB serial devices plugged in later)", class)
			}
		}
		if c.Devices.GPIO == "host" && !slices.Contains(allow, "char-gpiochip rw") {
			t.Errorf("kiosk.json uses host GPIO; DeviceAllow %q lacks char-gpiochip (/dev/gpiochip*)", allow)
		}
	}

	// systemd-analyze checks that the executable exists on this machine:
	// point it at the extracted one.
	dir := t.TempDir()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "ExecStart=/usr/bin/", "ExecStart="+root+"/usr/bin/", 1)
	copyPath := filepath.Join(dir, d.name+".service")
	if err := os.WriteFile(copyPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-analyze", "verify", copyPath)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", d.name, err, out)
	}
	out := run(t, nil, "systemd-analyze", "security", "--offline=yes", "--no-pager", copyPath)
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(m[1], 64); level > 4.5 {
		t.Errorf("%s: systemd-analyze security exposure %s, want at most 4.5:\n%s", d.name, m[1], out)
	}
}

func checkHubFiles(t *testing.T, d deb, root string) {
	for file, block := range map[string]string{
		"frank.conf":           "/etc/mosquitto/conf.d/frank.conf",
		"frank-passwords.conf": "/etc/mosquitto/conf.d/frank-passwords.conf",
		"frank.acl":            "/etc/mosquitto/frank.acl",
	} {
		b, err := os.ReadFile(filepath.Join(root, "usr/share/frank-hub/mosquitto", file))
		if err != nil {
			t.Fatal(err)
		}
		if want := readmeConf(t, block); string(b) != want {
			t.Errorf("mosquitto/%s differs from README's %s block:\n%s\nwant:\n%s", file, block, b, want)
		}
	}
	// The default config: a JSON object of hub flags, production places.
	var c map[string]any
	b, err := os.ReadFile(filepath.Join(root, "etc/frank/hub.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("hub.json: %v", err)
	}
	// Kiosks and browsers reach it over TLS only; plain HTTP stays on loopback.
	for k, want := range map[string]any{"data": "/var/lib/frank/hub", "https": "0.0.0.0:8443", "http": "127.0.0.1:8080",
		"broker-tls-listen": "0.0.0.0:8883", "broker-listen": nil, "tls": nil} {
		if c[k] != want {
			t.Errorf("hub.json: %s is %v, want %v", k, c[k], want)
		}
	}
	comments := ""
	for k, v := range c {
		if strings.HasPrefix(k, "#") {
			comments += fmt.Sprint(v) + "\n"
		}
	}
	for _, w := range []string{"postal", "payments", "pkcs11", "pkcs11-module", "pkcs11-token", "FRANK_PKCS11_PIN", "/etc/frank/hub.env"} {
		if !strings.Contains(comments, w) {
			t.Errorf("hub.json's comments do not tell the vendor about %s", w)
		}
	}
	u := unit(t, filepath.Join(root, "usr/lib/systemd/system/frank-hub.service"))
	if got := u["EnvironmentFile"]; len(got) != 1 || got[0] != "-/etc/frank/hub.env" {
		t.Errorf("hub: EnvironmentFile=%q, want -/etc/frank/hub.env", got)
	}
	if d.goarch == runtime.GOARCH {
		out := run(t, nil, filepath.Join(root, "usr/bin/frank-hub"), "--check-config", "--config", filepath.Join(root, "etc/frank/hub.json"))
		if !strings.Contains(out, "hub: config ok") {
			t.Errorf("frank-hub --check-config: %q", out)
		}
	}
}

// kioskBinary is the kiosk built for this machine, to check the packaged
// config with the kiosk's own strict parser.
func kioskBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "kiosk")
	run(t, nil, "go", "build", "-o", out, "../appliance/cmd/kiosk")
	return out
}

func checkKioskFiles(t *testing.T, root string) {
	// Every field is one the kiosk knows; the id, password and store ZIP
	// come with enrollment and from the installer.
	out := run(t, nil, kioskBinary(t), "--config", filepath.Join(root, "etc/frank/kiosk.json"),
		"--id", "k1", "--password", "pw", "--zip", "94544", "--check-config")
	if !strings.Contains(out, "config ok") {
		t.Errorf("kiosk --check-config with the packaged kiosk.json: %q", out)
	}
	var c struct {
		Journal, Listen, Log string
		Devices              struct{ GPIO string }
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/frank/kiosk.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Journal != "/var/lib/frank/kiosk/journal.db" || c.Listen != "127.0.0.1:8081" || c.Log != "json" || c.Devices.GPIO != "host" {
		t.Errorf("kiosk.json: %+v", c)
	}

	// udev: each device the config names has a rule, and every active rule
	// is well formed.
	rules, err := os.ReadFile(filepath.Join(root, "usr/lib/udev/rules.d/60-frank-kiosk.rules"))
	if err != nil {
		t.Fatal(err)
	}
	key := regexp.MustCompile(`^([A-Z_]+(\{[^}]+\})?)(==|!=|\+=|:=|=)"([^"]*)"$`)
	named := map[string]bool{}
	for i, line := range strings.Split(string(rules), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		matches := 0
		for _, kv := range strings.Split(line, ", ") {
			m := key.FindStringSubmatch(kv)
			if m == nil {
				t.Errorf("udev rules line %d: %q is not KEY op \"value\"", i+1, kv)
				continue
			}
			switch {
			case m[3] == "==" || m[3] == "!=":
				matches++
			case m[1] == "SYMLINK" && m[3] == "+=":
				named[m[4]] = true
			case m[1] == "GROUP" || m[1] == "MODE":
			default:
				t.Errorf("udev rules line %d: unexpected %s", i+1, kv)
			}
		}
		if matches == 0 {
			t.Errorf("udev rules line %d matches every device", i+1)
		}
		if strings.Contains(line, `SUBSYSTEM=="tty"`) && (!strings.Contains(line, `GROUP="dialout"`) || !strings.Contains(line, `MODE="0660"`)) {
			t.Errorf("udev rules line %d: want GROUP=\"dialout\", MODE=\"0660\"", i+1)
		}
	}
	for _, n := range []string{"frank-printer", "frank-scale", "frank-scanner", "frank-terminal"} {
		if !named[n] {
			t.Errorf("udev rules never name /dev/%s", n)
		}
	}

	// The browser's managed policy is the one TestKioskBrowserPolicy checks.
	if b, err := os.ReadFile(filepath.Join(root, "etc/chromium/policies/managed/frank-kiosk.json")); err != nil {
		t.Error(err)
	} else if _, want := kioskPolicy(t); !bytes.Equal(b, want) {
		t.Errorf("the packaged Chromium policy differs from %s", policyFile)
	}
	// sshd makes the host keys the image does not ship, before its own
	// config check (which fails without them).
	ssh := unit(t, filepath.Join(root, "usr/lib/systemd/system/ssh.service.d/frank-kiosk-host-keys.conf"))
	if got, want := ssh["ExecStartPre"], []string{"", "/usr/bin/ssh-keygen -A", "/usr/sbin/sshd -t"}; !slices.Equal(got, want) {
		t.Errorf("ssh.service drop-in: ExecStartPre %q, want %q", got, want)
	}

	// The touchscreen: the autostart runs the script, which is POSIX sh and
	// opens the kiosk's UI in Chromium's kiosk mode.
	desktop, err := os.ReadFile(filepath.Join(root, "etc/xdg/autostart/frank-touchscreen.desktop"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(desktop, []byte("[Desktop Entry]\n")) || !bytes.Contains(desktop, []byte("\nType=Application\n")) ||
		!bytes.Contains(desktop, []byte("\nExec=/usr/share/frank-kiosk/touchscreen\n")) {
		t.Errorf("frank-touchscreen.desktop:\n%s", desktop)
	}
	script := filepath.Join(root, "usr/share/frank-kiosk/touchscreen")
	run(t, nil, "sh", "-n", script)
	s, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"http://127.0.0.1:8081/", "api/v1/status", "--kiosk", "--noerrdialogs", "--incognito", "exec "} {
		if !bytes.Contains(s, []byte(w)) {
			t.Errorf("touchscreen script has no %q", w)
		}
	}
}

// testRoot is a minimal Debian bookworm made with mmdebstrap, and the way
// to run commands in it with the systemctl stub.
type testRoot struct {
	t    *testing.T
	dir  string
	stub string // the stub's log, inside dir
}

const stubLog = "/var/log/systemctl-stub.log"

func newTestRoot(t *testing.T) *testRoot {
	need(t, "mmdebstrap", "mmdebstrap")
	need(t, "chroot", "coreutils")
	dir := filepath.Join(t.TempDir(), "root")
	start := time.Now()
	// adduser is in every real installation but not in minbase; the test
	// hides it for the hub to try the useradd path too.
	run(t, nil, "mmdebstrap", "--quiet", "--variant=minbase", "--include=adduser", "bookworm", dir)
	t.Logf("mmdebstrap --variant=minbase bookworm: %s", time.Since(start).Round(time.Second))
	r := &testRoot{t: t, dir: dir, stub: filepath.Join(dir, stubLog)}
	stub := "#!/bin/sh\n# systemctl for the package tests: logs what it is asked.\necho \"$*\" >>" + stubLog + "\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "usr/local/sbin/systemctl-stub"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	r.run("dpkg", "--add-architecture", "arm64")
	return r
}

// run runs a command in the root as root, with FRANK_SYSTEMCTL set.
func (r *testRoot) run(args ...string) string {
	r.t.Helper()
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C",
		"DEBIAN_FRONTEND=noninteractive", "FRANK_SYSTEMCTL=/usr/local/sbin/systemctl-stub"}
	return run(r.t, env, "chroot", append([]string{r.dir}, args...)...)
}

// stubCalls returns what systemctl was asked since the last call.
func (r *testRoot) stubCalls() []string {
	r.t.Helper()
	b, err := os.ReadFile(r.stub)
	if err != nil && !os.IsNotExist(err) {
		r.t.Fatal(err)
	}
	if err := os.Remove(r.stub); err != nil && !os.IsNotExist(err) {
		r.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// id returns a user's uid and gid in the root.
func (r *testRoot) id(user string) (uid, gid int, home, shell string) {
	r.t.Helper()
	f := strings.Split(strings.TrimSpace(r.run("getent", "passwd", user)), ":")
	if len(f) != 7 {
		r.t.Fatalf("getent passwd %s: %q", user, f)
	}
	uid, _ = strconv.Atoi(f[2])
	gid, _ = strconv.Atoi(f[3])
	return uid, gid, f[5], f[6]
}

func (r *testRoot) read(path string) string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, path))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

// inOrder reports whether want occur in calls in this order.
func inOrder(calls []string, want ...string) bool {
	i := 0
	for _, c := range calls {
		if i < len(want) && c == want[i] {
			i++
		}
	}
	return i == len(want)
}

// The hub (native) and the kiosk (arm64, not run) install into a Debian
// bookworm root: users, state directories and the services are set up and
// the hub's config validates. Version 1.0.1 over 1.0.0 keeps an edited
// config and the data and restarts both services; purging the hub keeps
// its ledger.
func TestInstallAndUpgrade(t *testing.T) {
	skipShort(t)
	if os.Geteuid() != 0 {
		t.Fatal("TestInstallAndUpgrade needs root (mmdebstrap, chroot and dpkg into a test root); run it as root, as CI does")
	}
	hub := deb{name: "frank-hub", arch: debArch(t)}
	kiosk := deb{name: "frank-kiosk", arch: "arm64"}
	out := t.TempDir()
	only := "hub_" + hub.arch + ",kiosk_arm64"
	build(t, out, "1.0.0", only)
	build(t, out, "1.0.1", only)
	r := newTestRoot(t)
	debDir := filepath.Join(r.dir, "tmp/debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		for _, d := range []deb{hub, kiosk} {
			b, err := os.ReadFile(filepath.Join(out, d.file(v)))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(debDir, d.file(v)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	// First install: the hub where adduser is missing (useradd), the kiosk
	// with adduser.
	adduser := filepath.Join(r.dir, "usr/sbin/adduser")
	if err := os.Rename(adduser, adduser+".hidden"); err != nil {
		t.Fatal(err)
	}
	r.run("dpkg", "-i", "/tmp/debs/"+hub.file("1.0.0"))
	if err := os.Rename(adduser+".hidden", adduser); err != nil {
		t.Fatal(err)
	}
	calls := r.stubCalls()
	if !inOrder(calls, "daemon-reload", "enable frank-hub.service", "start frank-hub.service") {
		t.Errorf("installing the hub asked systemctl %q, want daemon-reload, enable, start", calls)
	}
	r.run("dpkg", "-i", "/tmp/debs/"+kiosk.file("1.0.0"))
	calls = r.stubCalls()
	if !inOrder(calls, "daemon-reload", "enable frank-kiosk.service", "start frank-kiosk.service") {
		t.Errorf("installing the kiosk asked systemctl %q, want daemon-reload, enable, start", calls)
	}

	for _, d := range []deb{hub, kiosk} {
		uid, gid, home, shell := r.id(d.name)
		state := "/var/lib/frank/" + d.short()
		if uid >= 1000 || home != state || !strings.HasSuffix(shell, "nologin") {
			t.Errorf("user %s: uid %d, home %s, shell %s; want a system user at home in %s without a shell", d.name, uid, home, shell, state)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(r.dir, state), &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Uid) != uid || int(st.Gid) != gid || st.Mode&0o7777 != 0o750 || st.Mode&syscall.S_IFDIR == 0 {
			t.Errorf("%s: owner %d:%d mode %o, want %d:%d 0750", state, st.Uid, st.Gid, st.Mode&0o7777, uid, gid)
		}
	}
	kioskJSON := filepath.Join(r.dir, "etc/frank/kiosk.json")
	checkKioskJSON := func(when string) {
		t.Helper()
		uid, gid, _, _ := r.id("frank-kiosk")
		var st syscall.Stat_t
		if err := syscall.Stat(kioskJSON, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 || int(st.Gid) != gid || int(st.Uid) == uid || st.Mode&0o7777 != 0o640 {
			t.Errorf("%s: /etc/frank/kiosk.json is %d:%d %o, want root:frank-kiosk (0:%d) 0640", when, st.Uid, st.Gid, st.Mode&0o7777, gid)
		}
	}
	checkKioskJSON("after the install")
	groups := r.run("id", "-nG", "frank-kiosk")
	for _, g := range []string{"dialout", "gpio"} {
		if !slices.Contains(strings.Fields(groups), g) {
			t.Errorf("frank-kiosk is in %q, want %s", groups, g)
		}
	}
	if out := r.run("frank-hub", "--check-config", "--config", "/etc/frank/hub.json"); !strings.Contains(out, "hub: config ok") {
		t.Errorf("frank-hub --check-config: %q", out)
	}

	// An admin edits the config; the hub makes its database, as the
	// service would, as frank-hub; the kiosk has been enrolled.
	conf := strings.Replace(r.read("/etc/frank/hub.json"), `"log": "json"`, `"log": "text"`, 1)
	if !strings.Contains(conf, `"log": "text"`) {
		t.Fatal(`hub.json has no "log": "json" to edit`)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "etc/frank/hub.json"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	uid, gid, _, _ := r.id("frank-hub")
	spec := fmt.Sprintf("--userspec=%d:%d", uid, gid)
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	ledger := run(t, env, "chroot", spec, r.dir, "frank-hub", "ledger", "check", "--config", "/etc/frank/hub.json")
	db := filepath.Join(r.dir, "var/lib/frank/hub/hub.db")
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatalf("frank-hub ledger check made no database: %v\n%s", err, ledger)
	}
	enrollment := filepath.Join(r.dir, "var/lib/frank/kiosk/enrollment.json")
	if err := os.WriteFile(enrollment, []byte(`{"id":"k1"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// An older package left kiosk.json world-readable, and staff secrets
	// were added to it.
	kconf := strings.Replace(r.read("/etc/frank/kiosk.json"), `"log": "json"`, `"log": "json", "staff_pin_bcrypt": "$2a$10$x"`, 1)
	if err := os.WriteFile(kioskJSON, []byte(kconf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kioskJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(kioskJSON, 0, 0); err != nil {
		t.Fatal(err)
	}

	// Upgrade both.
	r.run("dpkg", "-i", "/tmp/debs/"+hub.file("1.0.1"))
	calls = r.stubCalls()
	if !inOrder(calls, "daemon-reload", "restart frank-hub.service") || slices.Contains(calls, "stop frank-hub.service") ||
		slices.Contains(calls, "enable frank-hub.service") {
		t.Errorf("upgrading the hub asked systemctl %q, want daemon-reload and restart, no stop or enable", calls)
	}
	r.run("dpkg", "-i", "/tmp/debs/"+kiosk.file("1.0.1"))
	calls = r.stubCalls()
	if !inOrder(calls, "daemon-reload", "restart frank-kiosk.service") || slices.Contains(calls, "stop frank-kiosk.service") {
		t.Errorf("upgrading the kiosk asked systemctl %q, want daemon-reload and restart, no stop", calls)
	}
	for _, p := range []string{"frank-hub", "frank-kiosk:arm64"} {
		if v := r.run("dpkg-query", "-W", "-f=${Version}", p); v != "1.0.1" {
			t.Errorf("%s is at %q after the upgrade, want 1.0.1", p, v)
		}
	}
	if v := r.run("frank-hub", "--version"); !strings.Contains(v, "1.0.1") {
		t.Errorf("frank-hub --version after the upgrade: %q", v)
	}
	if got := r.read("/etc/frank/hub.json"); got != conf {
		t.Errorf("the upgrade did not keep the edited hub.json:\n%s", got)
	}
	if out := r.run("frank-hub", "--check-config", "--config", "/etc/frank/hub.json"); !strings.Contains(out, "hub: config ok") {
		t.Errorf("frank-hub --check-config after the upgrade: %q", out)
	}
	if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the upgrade changed or lost the hub's database: %v", err)
	}
	if got := r.read("/etc/frank/kiosk.json"); got != kconf {
		t.Errorf("the upgrade did not keep the edited kiosk.json:\n%s", got)
	}
	checkKioskJSON("after the upgrade")
	if b, err := os.ReadFile(enrollment); err != nil || string(b) != `{"id":"k1"}` {
		t.Errorf("the upgrade lost the kiosk's enrollment: %v", err)
	}
	run(t, env, "chroot", spec, r.dir, "frank-hub", "ledger", "check", "--config", "/etc/frank/hub.json")

	// Purge the hub: its program and config go, its ledger and user stay.
	r.run("dpkg", "--purge", "frank-hub")
	if calls := r.stubCalls(); !slices.Contains(calls, "stop frank-hub.service") {
		t.Errorf("removing the hub asked systemctl %q, want stop", calls)
	}
	for _, gone := range []string{"usr/bin/frank-hub", "etc/frank/hub.json", "usr/lib/systemd/system/frank-hub.service"} {
		if _, err := os.Stat(filepath.Join(r.dir, gone)); !os.IsNotExist(err) {
			t.Errorf("/%s is still there after the purge", gone)
		}
	}
	if _, err := os.Stat(db); err != nil {
		t.Errorf("purging the hub removed its ledger: %v", err)
	}
	r.id("frank-hub")
	if _, err := os.Stat(filepath.Join(r.dir, "etc/frank/kiosk.json")); err != nil {
		t.Errorf("purging the hub removed the kiosk's config: %v", err)
	}
	r.run("dpkg", "--purge", "frank-kiosk:arm64")
	if _, err := os.Stat(enrollment); err != nil {
		t.Errorf("purging the kiosk removed its state: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "etc/frank")); !os.IsNotExist(err) {
		t.Errorf("/etc/frank is still there with both packages purged")
	}
	status := r.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}${binary:Package}\n")
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "ii ") && !strings.HasPrefix(sc.Text(), "pn ") && !strings.HasPrefix(sc.Text(), "un ") {
			t.Errorf("package not installed cleanly: %s", sc.Text())
		}
	}
}
