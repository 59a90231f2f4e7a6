//go:build imageboot

package images

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/paytermsim"
	"github.com/frank-postage/frank/testbench/printersim"
	"github.com/frank-postage/frank/testbench/scalesim"
	"github.com/frank-postage/frank/testbench/scannersim"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
	"golang.org/x/crypto/bcrypt"
)

// The guest reaches the hub only through QEMU's own forwarding of these
// ports of a made-up address to the host's loopback (guestfwd); no routed
// network leaves the machine.
const (
	hubAddr    = "10.0.2.100"
	guestKiosk = "qemu-kiosk"
	// screenWatchdogS is the touchscreen's watchdog on the emulated
	// display, in seconds (FRANK_SCREEN_WATCHDOG_S; the Pi's is 240).
	screenWatchdogS = 120
)

// TestImageBoots boots the kiosk's root file system, as `make image-rootfs`
// builds it for the Raspberry Pi, under qemu-system-aarch64 (TCG, no KVM)
// with Debian's stock kernel, and checks what a Pi would do: systemd
// reaches its target with no failed unit; udev names the emulated USB
// serial adapters by the package's rules; the kiosk enrolls with a
// one-time code and its service starts; a stamp is sold and printed on the
// emulated printer and verifies against the hub; the touchscreen comes up
// under cage and Chromium (a screenshot through QEMU's monitor, read by
// OCR); and the next package version installs while the kiosk is idle,
// keeping its journal and enrollment. It runs in `make test-image`.
func TestImageBoots(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("TestImageBoots needs root (mmdebstrap, mke2fs of a root file system); run it as root, as CI does")
	}
	qemu := need(t, "qemu-system-aarch64", "qemu-system-arm")
	need(t, "mke2fs", "e2fsprogs")
	need(t, "debugfs", "e2fsprogs")
	need(t, "tesseract", "tesseract-ocr")
	socat := need(t, "socat", "socat")
	art := browser.ArtifactsDir(t)
	work := t.TempDir()

	// The packages: the version in the image, and the next one.
	debs := filepath.Join(work, "debs")
	build(t, debs, "1.0.0", "kiosk_arm64")
	build(t, debs, "1.0.1", "kiosk_arm64")

	// The root file system, as make image-rootfs builds it (or one built
	// before, for a developer's second run).
	rootfs := os.Getenv("FRANK_IMAGE_ROOTFS")
	if rootfs == "" {
		rootfs = filepath.Join(work, "rootfs")
		start := time.Now()
		run(t, nil, "bash", "rpi/build-rootfs", rootfs, filepath.Join(debs, "frank-kiosk_1.0.0_arm64.deb"))
		t.Logf("images/rpi/build-rootfs: %s", time.Since(start).Round(time.Second))
	}
	img := filepath.Join(work, "img")
	start := time.Now()
	t.Log(strings.TrimSpace(run(t, nil, "bash", "qemu/build-image", rootfs, img)))
	t.Logf("images/qemu/build-image: %s", time.Since(start).Round(time.Second))

	// The hub and its world run on the host: the demo (with a kiosk of its
	// own on the host, which this test leaves alone).
	bin := filepath.Join(work, "bin")
	run(t, nil, "go", "build", "-o", bin+"/", "../hub/cmd/hub", "../appliance/cmd/kiosk", "../testbench/cmd/testbench")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	logf, err := os.Create(filepath.Join(art, "image-boot-host.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d, err := demo.Start(ctx, demo.Config{BinDir: bin, Dir: filepath.Join(work, "demo"), Sheets: 1, Output: logf,
		HubArgs: []string{"--tls-hosts", "localhost,127.0.0.1," + hubAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	code := enrollmentCode(t, d)
	sheet := strings.TrimSpace(hub(t, d, "stock", "issue", "--store", "demo-store", "--sheets", "1"))

	// The guest's devices: simulators on pseudo-terminals, each behind an
	// emulated FTDI adapter whose serial number the udev rules know.
	quiet := slog.New(slog.NewTextHandler(logf, nil))
	dev := filepath.Join(work, "dev")
	pr, err := printersim.Start(filepath.Join(dev, "printer"), filepath.Join(work, "labels"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	sc, err := scalesim.Start(filepath.Join(dev, "scale"), scalesim.NCI, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetUnit(scalesim.OZ)
	sc.SetWeight(20_000)
	scan, err := scannersim.Start(filepath.Join(dev, "scanner"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer scan.Close()
	term, err := paytermsim.Start(filepath.Join(dev, "terminal"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()

	// What the installer sets on a kiosk, and the test's own way in: root
	// on the serial console, and the next package waiting in /root.
	hubPort, brokerPort := port(t, d.HubURL()), port(t, "mqtts://"+d.BrokerAddr())
	pinHash, err := bcrypt.GenerateFromPassword([]byte(demo.StaffPIN), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	kioskJSON := map[string]any{
		"origin_zip": "", "listen": "127.0.0.1:8081", "broker": "mqtts://" + hubAddr + ":8883",
		"printer": map[string]any{"path": "/dev/frank-printer", "baud": 115200},
		"journal": "/var/lib/frank/kiosk/journal.db",
		"devices": map[string]any{
			"scale": map[string]any{"path": "/dev/frank-scale", "baud": 9600}, "scale_protocol": "nci",
			"scanner":  map[string]any{"path": "/dev/frank-scanner", "baud": 9600},
			"terminal": map[string]any{"path": "/dev/frank-terminal", "baud": 115200},
		},
		"log": "json",
		// Staff load stock: the kiosk's own PIN, there being no store staff at the hub.
		"staff_pin_bcrypt": string(pinHash),
	}
	b, _ := json.MarshalIndent(kioskJSON, "", "  ")
	// As the package leaves it: it holds the staff PIN's hash, so only the
	// kiosk's group reads it.
	put(t, img, "/etc/frank/kiosk.json", b, 0o640)
	setGroup(t, img, "/etc/frank/kiosk.json", rootfsGID(t, rootfs, "frank-kiosk"))
	put(t, img, "/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf", []byte(
		"[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I vt100\n"), 0o644)
	// The emulated display has no 3D: wlroots draws in software there (the
	// Pi's GPU has GL, and needs no such line). Chromium's page shows about
	// 40 s after the browser starts here, or not at all (see below), so the
	// watchdog gives up on a browser after 2 minutes, not the Pi's 4.
	put(t, img, "/etc/systemd/system/frank-touchscreen.service.d/emulated-display.conf", []byte(
		"[Service]\nEnvironment=WLR_RENDERER=pixman WLR_NO_HARDWARE_CURSORS=1 FRANK_SCREEN_WATCHDOG_S="+strconv.Itoa(screenWatchdogS)+"\n"), 0o644)
	put(t, img, "/etc/chromium.d/emulated-display", []byte("export CHROMIUM_FLAGS=\"$CHROMIUM_FLAGS --disable-gpu --ozone-platform=x11\"\n"), 0o644)
	next, err := os.ReadFile(filepath.Join(debs, "frank-kiosk_1.0.1_arm64.deb"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, img, "/root/frank-kiosk_1.0.1_arm64.deb", next, 0o644)

	// The update channel: a release signed with a vendor key the image
	// trusts (/etc/frank/release.pub), published at the hub.
	relKeys, rel, relBin := filepath.Join(work, "release-keys"), filepath.Join(work, "release-1.0.2"), filepath.Join(work, "kiosk-1.0.2")
	hub(t, d, "release", "keygen", "--out", relKeys)
	run(t, append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"), "go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version=1.0.2", "-o", relBin, "../appliance/cmd/kiosk")
	hub(t, d, "release", "sign", "--key", filepath.Join(relKeys, "release.key"), "--release", "1.0.2", "--out", rel, "arm64="+relBin)
	hub(t, d, "release", "publish", rel, "--key", filepath.Join(relKeys, "release.pub"))
	pub, err := os.ReadFile(filepath.Join(relKeys, "release.pub"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, img, "/etc/frank/release.pub", pub, 0o644)

	// Boot.
	console := filepath.Join(work, "console.sock")
	monitor := filepath.Join(work, "monitor.sock")
	args := []string{"-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048", "-nographic", "-display", "none",
		"-kernel", filepath.Join(img, "vmlinuz"), "-initrd", filepath.Join(img, "initrd.img"),
		// The Pi's firmware partition is not in the emulated machine.
		"-append", "root=LABEL=RASPIROOT rw rootwait console=ttyAMA0 net.ifnames=0 quiet loglevel=3 systemd.mask=boot-firmware.mount",
		"-drive", "if=none,id=root,format=raw,file=" + filepath.Join(img, "root.img"),
		"-device", "virtio-blk-device,drive=root",
		// guestfwd to a chardev carries one connection; a command per
		// connection (socat) carries as many as the kiosk opens.
		"-netdev", fmt.Sprintf("user,id=net,restrict=on,guestfwd=tcp:%s:443-cmd:%s - TCP:127.0.0.1:%s,guestfwd=tcp:%s:8883-cmd:%s - TCP:127.0.0.1:%s",
			hubAddr, socat, hubPort, hubAddr, socat, brokerPort),
		"-device", "virtio-net-device,netdev=net",
		"-device", "virtio-gpu-pci",
		"-device", "qemu-xhci,id=usb",
		"-chardev", "socket,id=con,path=" + console + ",server=on,wait=off",
		"-serial", "chardev:con",
		"-monitor", "unix:" + monitor + ",server,nowait",
	}
	for _, u := range []struct{ id, path, serial string }{
		{"printer", pr.Path(), "FRANK-PRINTER-1"}, {"scale", sc.Path(), "FRANK-SCALE-1"},
		{"scanner", scan.Path(), "FRANK-SCANNER-1"}, {"terminal", term.Path(), "FRANK-TERMINAL-1"},
	} {
		args = append(args, "-chardev", "tty,id="+u.id+",path="+u.path, "-device", "usb-serial,bus=usb.0,chardev="+u.id+",serial="+u.serial)
	}
	vm := exec.CommandContext(ctx, qemu, args...)
	vmLog, err := os.Create(filepath.Join(art, "image-boot-qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer vmLog.Close()
	vm.Stdout, vm.Stderr = vmLog, vmLog
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { vm.Process.Kill(); vm.Wait() }()
	booted := time.Now()
	sh := dialConsole(t, console, filepath.Join(art, "image-boot-console.log"))

	// systemd reaches its default target with no failed unit.
	sh.prompt(t, 15*time.Minute)
	t.Logf("a shell on the serial console after %s", time.Since(booted).Round(time.Second))
	state := sh.run(t, 15*time.Minute, "systemctl is-system-running --wait; systemctl --failed --no-legend --plain")
	if !strings.HasPrefix(state, "running") {
		t.Errorf("systemd: %q, want running with no failed units", state)
	}
	t.Logf("systemd running after %s", time.Since(booted).Round(time.Second))

	// sshd runs on host keys this kiosk made at its first boot (the image
	// ships none), and kiosk.json is not for the touchscreen's user.
	access := sh.run(t, time.Minute, "systemctl is-active ssh.service; ls /etc/ssh/ | grep -c '^ssh_host_.*_key$'; stat -c '%a %U:%G' /etc/frank/kiosk.json; su -s /bin/sh frank-screen -c 'cat /etc/frank/kiosk.json' >/dev/null 2>&1 && echo readable || echo unreadable")
	if f := strings.Fields(access); len(f) != 5 || f[0] != "active" || f[1] == "0" || f[2] != "640" || f[3] != "root:frank-kiosk" || f[4] != "unreadable" {
		t.Errorf("ssh host keys and kiosk.json: %q, want ssh active with its keys, kiosk.json 640 root:frank-kiosk and unreadable to frank-screen", access)
	}

	// udev named the adapters by the package's rules.
	links := sh.run(t, time.Minute, "for d in printer scale scanner terminal; do readlink -f /dev/frank-$d; done; udevadm info -q property /dev/frank-printer | grep -E 'ID_SERIAL_SHORT|ID_VENDOR_ID'")
	for _, want := range []string{"/dev/ttyUSB", "ID_SERIAL_SHORT=FRANK-PRINTER-1", "ID_VENDOR_ID=0403"} {
		if !strings.Contains(links, want) {
			t.Errorf("udev: %q lacks %q", links, want)
		}
	}
	if n := strings.Count(links, "/dev/ttyUSB"); n != 4 {
		t.Errorf("%d of the 4 devices named: %q", n, links)
	}

	// Enroll with the one-time code; then the service starts and is ready.
	out := sh.run(t, 5*time.Minute, fmt.Sprintf("runuser -u frank-kiosk -- frank-kiosk enroll --hub https://%s --code %s && systemctl restart frank-kiosk && echo restarted", hubAddr, code))
	if !strings.Contains(out, "enrolled as "+guestKiosk) || !strings.Contains(out, "restarted") {
		t.Fatalf("enroll: %s\nnetwork: %s", out, sh.run(t, time.Minute, "ip -br addr; ip route; systemctl status networking --no-pager -n 5 | tail -8; cat /etc/network/interfaces"))
	}
	wait.Until(t, 10*time.Minute, "the guest kiosk to be ready", func() error {
		if got := sh.run(t, time.Minute, "wget -qO- http://127.0.0.1:8081/healthz"); !strings.Contains(got, `"ready":true`) {
			return fmt.Errorf("healthz %q; journal: %s", got, sh.run(t, time.Minute, "journalctl -u frank-kiosk -n 5 --no-pager -o cat"))
		}
		return nil
	})
	t.Logf("kiosk enrolled and ready after %s", time.Since(booted).Round(time.Second))

	// A stamp: the sheet loaded, sold by card on the emulated terminal,
	// printed on the emulated printer, and verified against the hub.
	postAs := func(token, path, body string) string {
		auth := ""
		if token != "" {
			auth = fmt.Sprintf(" --header='Authorization: Bearer %s'", token)
		}
		return sh.run(t, 5*time.Minute, fmt.Sprintf("wget -qO- --content-on-error --header='Content-Type: application/json'%s --post-data='%s' http://127.0.0.1:8081%s", auth, body, path))
	}
	post := func(path, body string) string { return postAs("", path, body) }
	var staff struct {
		Token string `json:"token"`
	}
	if got := post("/api/v1/staff/login", fmt.Sprintf(`{"pin":"%s"}`, demo.StaffPIN)); json.Unmarshal([]byte(got), &staff) != nil || staff.Token == "" {
		t.Fatalf("staff login: %s", got)
	}
	if got := postAs(staff.Token, "/api/v1/staff/stock", fmt.Sprintf(`{"sheets":["%s"]}`, sheet)); !strings.Contains(got, `"labels_left":10`) {
		t.Fatalf("loading sheet %s: %s", sheet, got)
	}
	postAs(staff.Token, "/api/v1/staff/logout", `{}`)
	labelOut := pr.Next()
	sale := post("/api/v1/sales", `{"rate_class":"1100","weight_mg":0,"payment":{"method":"terminal"}}`)
	if !strings.Contains(sale, `"outcome":"printed"`) {
		t.Fatalf("sale in the guest: %s", sale)
	}
	var label string
	select {
	case label = <-labelOut:
	case <-time.After(time.Minute):
		t.Fatal("no label came out of the emulated printer")
	}
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	data, err := verify.ReadPNG(label)
	if err != nil {
		t.Fatal(err)
	}
	in, err := keys.Verify(data)
	if err != nil {
		t.Fatalf("the guest's stamp does not verify: %v", err)
	}
	if in.Postage != 780 || !strings.HasPrefix(in.Label.String(), sheet) {
		t.Errorf("the stamp says %s on %s, want $0.78 on a label of %s", in.Postage, in.Label, sheet)
	}
	copyFile(t, label, filepath.Join(art, "image-boot-label.png"))
	t.Logf("stamp sold and verified after %s", time.Since(booted).Round(time.Second))

	// The touchscreen: cage and Chromium on the virtual display, seen
	// through QEMU's monitor.
	shot := filepath.Join(art, "image-boot-touchscreen.ppm")
	startScreen := func() error {
		if err := monitorCommand(monitor, "screendump "+shot); err != nil {
			return err
		}
		text, err := exec.Command("tesseract", shot, "-").Output()
		if err != nil {
			return err
		}
		if !strings.Contains(strings.Join(strings.Fields(string(text)), " "), "Put your letter on the scale") {
			return fmt.Errorf("the screen reads %q; %s", strings.TrimSpace(string(text)),
				sh.run(t, time.Minute, "systemctl is-active frank-touchscreen; ls /dev/dri; ps -eo pid,ppid,etime,time,args | grep -E 'cage|chrom|Xwayland|touchscr|wget|seat' | cut -c1-150; systemctl is-active systemd-logind dbus; loginctl list-sessions --no-legend; journalctl -u frank-touchscreen --no-pager -o cat | grep -v -E 'seatd|pam_' | tail -25"))
		}
		return nil
	}
	// On the emulated display (Chromium on X through Xwayland, drawn in
	// software) Chromium's first start has never loaded the page in about
	// half the boots here: all its processes run, and the screen stays
	// cage's grey. The touchscreen's own watchdog then restarts the
	// browser (its page has not polled the kiosk for screenWatchdogS); the
	// test keeps the unshown screen and says how often the watchdog acted.
	unshown := time.Now().Add(screenWatchdogS * time.Second)
	kept := false
	wait.Until(t, 12*time.Minute, "the touchscreen to show its start screen", func() error {
		err := startScreen()
		if err != nil && !kept && time.Now().After(unshown) {
			copyFile(t, shot, filepath.Join(art, "image-boot-touchscreen-unshown.ppm"))
			kept = true
		}
		return err
	})
	if n := strings.Count(sh.run(t, time.Minute, "journalctl -b -t frank-touchscreen --no-pager -o cat"), "has not polled the kiosk"); n > 0 {
		t.Logf("the touchscreen's watchdog restarted the browser %d time(s) before its page showed", n)
	}
	if env := sh.run(t, time.Minute, "systemctl show -p Environment --value frank-touchscreen"); !strings.Contains(env, "FRANK_SCREEN_WATCHDOG_S="+strconv.Itoa(screenWatchdogS)) {
		t.Errorf("the touchscreen's environment is %q: the emulated display's watchdog is not set", env)
	}
	toPNG(t, shot, filepath.Join(art, "image-boot-touchscreen.png"))
	t.Logf("touchscreen up after %s", time.Since(booted).Round(time.Second))

	// The next version, installed while the kiosk is idle: the service
	// restarts on it, and the journal and the enrollment stay.
	before := sh.run(t, time.Minute, "systemctl show -p InvocationID --value frank-kiosk; md5sum /var/lib/frank/kiosk/enrollment.json")
	out = sh.run(t, 10*time.Minute, "DEBIAN_FRONTEND=noninteractive dpkg -i /root/frank-kiosk_1.0.1_arm64.deb >/dev/null && dpkg-query -W -f '${Version}\\n' frank-kiosk")
	if !strings.Contains(out, "1.0.1") {
		t.Fatalf("update: %s", out)
	}
	after := sh.run(t, time.Minute, "systemctl show -p InvocationID --value frank-kiosk; md5sum /var/lib/frank/kiosk/enrollment.json")
	bl, al := strings.Split(before, "\n"), strings.Split(after, "\n")
	if len(bl) < 2 || len(al) < 2 || bl[0] == al[0] || bl[1] != al[1] {
		t.Errorf("after the update: service %q → %q (want a restart), enrollment %q → %q (want kept)", bl, al, bl, al)
	}
	wait.Until(t, 10*time.Minute, "the updated kiosk to be ready", func() error {
		if got := sh.run(t, time.Minute, "wget -qO- http://127.0.0.1:8081/healthz"); !strings.Contains(got, `"ready":true`) {
			return fmt.Errorf("healthz %q", got)
		}
		return nil
	})
	// The journal keeps the loaded sheet, less the label sold. Ready is
	// the hub link; the labels left are known once the restarted kiosk has
	// asked the hub about its journal's sheets, a moment later (CI once
	// read the status in between, on a busy machine).
	wait.Until(t, 2*time.Minute, "the updated kiosk to know the labels its journal kept", func() error {
		if got := sh.run(t, time.Minute, "wget -qO- http://127.0.0.1:8081/api/v1/status"); !strings.Contains(got, `"labels_left":9`) {
			return fmt.Errorf("after the update the kiosk forgot its journal: %s", got)
		}
		return nil
	})
	t.Logf("updated to 1.0.1 after %s", time.Since(booted).Round(time.Second))

	// Then by the update channel: a rollout offers the signed 1.0.2; the
	// kiosk downloads it from the hub, checks it, installs it beside the
	// package's binary, exits, and systemd starts the launcher, which runs
	// 1.0.2 on trial until it passes its health check.
	hub(t, d, "rollout", "start", "1.0.2", "--stage", "kiosks="+guestKiosk, "--health", "180s")
	wait.Until(t, 10*time.Minute, "the rollout of 1.0.2 healthy on the guest", func() error {
		if out := hub(t, d, "rollout", "list"); !strings.Contains(out, "healthy 1 failed 0 pending 0") {
			return fmt.Errorf("rollout list: %q; the guest: %s", out, sh.run(t, time.Minute, "journalctl -u frank-kiosk -n 5 --no-pager -o cat"))
		}
		return nil
	})
	// Healthy is the hub link, the printer and a heartbeat: the labels
	// left are known once the kiosk has asked the hub about its journal's
	// sheets, a moment later (as after the package's update above).
	wait.Until(t, 2*time.Minute, "the rolled-out kiosk on 1.0.2 with its enrollment and labels", func() error {
		got := sh.run(t, time.Minute, "readlink /var/lib/frank/kiosk/releases/current; md5sum /var/lib/frank/kiosk/enrollment.json; wget -qO- http://127.0.0.1:8081/api/v1/status")
		if gl := strings.Split(got, "\n"); len(gl) < 3 || !strings.Contains(gl[0], "1.0.2") || gl[1] != bl[1] || !strings.Contains(got, `"labels_left":9`) {
			return fmt.Errorf("after the rollout: %q; want current at 1.0.2, the enrollment %q and 9 labels kept", got, bl[1])
		}
		return nil
	})
	t.Logf("updated to 1.0.2 by a signed rollout after %s", time.Since(booted).Round(time.Second))
}

// enrollmentCode provisions the guest's kiosk and returns its one-time code.
func enrollmentCode(t *testing.T, d *demo.Demo) string {
	t.Helper()
	out := hub(t, d, "kiosk", "add", guestKiosk, "--store", "demo-store", "--zip", "02134")
	for _, line := range strings.Split(out, "\n") {
		// enrollment code: CODE (once, until ...): kiosk enroll --hub https://HUB --code CODE@FINGERPRINT
		if strings.HasPrefix(line, "enrollment code: ") {
			if i := strings.LastIndex(line, "--code "); i >= 0 {
				return strings.TrimSpace(line[i+len("--code "):])
			}
		}
	}
	t.Fatalf("no enrollment code in %q", out)
	return ""
}

func hub(t *testing.T, d *demo.Demo, args ...string) string {
	t.Helper()
	out, err := d.Hub(args...)
	if err != nil {
		t.Fatalf("hub %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// port is the port of a URL's host.
func port(t *testing.T, u string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(u[strings.Index(u, "://")+3:])
	if err != nil {
		t.Fatalf("port of %s: %v", u, err)
	}
	return p
}

// put writes a file into the ext4 image with debugfs: no loop device,
// no mount. Parent directories are made as needed.
func put(t *testing.T, img, path string, data []byte, mode os.FileMode) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		t.Fatal(err)
	}
	var cmds strings.Builder
	parts := strings.Split(strings.Trim(filepath.Dir(path), "/"), "/")
	for i := range parts {
		fmt.Fprintf(&cmds, "mkdir /%s\n", strings.Join(parts[:i+1], "/"))
	}
	fmt.Fprintf(&cmds, "rm %s\nwrite %s %s\nsif %s mode 0%o\n", path, tmp, path, path, 0o100000|mode)
	cmd := exec.Command("debugfs", "-w", "-f", "-", filepath.Join(img, "root.img"))
	cmd.Stdin = strings.NewReader(cmds.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs %s: %v\n%s", path, err, out)
	}
}

// setGroup sets a file's group in the ext4 image with debugfs.
func setGroup(t *testing.T, img, path string, gid int) {
	t.Helper()
	cmd := exec.Command("debugfs", "-w", "-f", "-", filepath.Join(img, "root.img"))
	cmd.Stdin = strings.NewReader(fmt.Sprintf("sif %s gid %d\n", path, gid))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs sif %s gid %d: %v\n%s", path, gid, err, out)
	}
}

// rootfsGID returns a group's id in the root file system.
func rootfsGID(t *testing.T, rootfs, group string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootfs, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 3 && f[0] == group {
			gid, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("/etc/group: %q", line)
			}
			return gid
		}
	}
	t.Fatalf("the root file system has no group %s", group)
	return 0
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// toPNG converts QEMU's PPM screendump to PNG for the artefacts.
func toPNG(t *testing.T, ppm, out string) {
	t.Helper()
	f, err := os.Open(ppm)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var w, h, max int
	if _, err := fmt.Fscanf(r, "P6\n%d %d\n%d\n", &w, &h, &max); err != nil {
		t.Fatalf("screendump %s: %v", ppm, err)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	px := make([]byte, 3)
	for i := 0; i < w*h; i++ {
		if _, err := io.ReadFull(r, px); err != nil {
			t.Fatalf("screendump %s: %v", ppm, err)
		}
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = px[0], px[1], px[2], 255
	}
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := png.Encode(o, img); err != nil {
		t.Fatal(err)
	}
}

// monitorCommand runs one HMP command on QEMU's monitor.
func monitorCommand(sock, command string) error {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(command + "\n")); err != nil {
		return err
	}
	// The monitor echoes the command and prompts again when it is done.
	r := bufio.NewReader(c)
	seen := ""
	for !strings.Contains(seen, command) || !strings.HasSuffix(strings.TrimRight(seen, " "), "(qemu)") {
		b, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("monitor %q: %w (read %q)", command, err, seen)
		}
		seen += string(b)
	}
	return nil
}

// shell is root's shell on the guest's serial console.
type shell struct {
	conn net.Conn
	mu   sync.Mutex
	buf  strings.Builder
	more chan struct{}
	n    int
}

func dialConsole(t *testing.T, path, logPath string) *shell {
	t.Helper()
	var c net.Conn
	wait.Until(t, time.Minute, "QEMU's console socket", func() (err error) {
		c, err = net.Dial("unix", path)
		return err
	})
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	s := &shell{conn: c, more: make(chan struct{}, 1)}
	go func() {
		defer log.Close()
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			if n > 0 {
				log.Write(b[:n])
				s.mu.Lock()
				s.buf.Write(b[:n])
				s.mu.Unlock()
				select {
				case s.more <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

// until waits for the console's output to match re, and consumes it.
func (s *shell) until(t *testing.T, within time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(within)
	for {
		s.mu.Lock()
		text := s.buf.String()
		if loc := re.FindStringSubmatchIndex(text); loc != nil {
			m := re.FindStringSubmatch(text)
			rest := text[loc[1]:]
			s.buf.Reset()
			s.buf.WriteString(rest)
			s.mu.Unlock()
			return m
		}
		s.mu.Unlock()
		select {
		case <-s.more:
		case <-deadline:
			t.Fatalf("the console never showed %s; its last output:\n%s", re, tail(text, 2000))
		}
	}
}

// prompt waits for root's autologin shell.
func (s *shell) prompt(t *testing.T, within time.Duration) {
	t.Helper()
	s.until(t, within, regexp.MustCompile(`root@[a-z0-9-]+:[^\n]*# $`))
	s.conn.Write([]byte("stty -echo cols 500; export PAGER=cat SYSTEMD_PAGER= SYSTEMD_COLORS=0; dmesg -n 1\n"))
}

// run runs a command in the guest's shell and returns its output.
func (s *shell) run(t *testing.T, within time.Duration, command string) string {
	t.Helper()
	s.n++
	begin, end := fmt.Sprintf("@@B%d@@", s.n), fmt.Sprintf("@@E%d@@", s.n)
	fmt.Fprintf(s.conn, "echo %s; %s; echo %s\n", begin, command, end)
	m := s.until(t, within, regexp.MustCompile(`(?s)\n`+regexp.QuoteMeta(begin)+`\r?\n(.*?)`+regexp.QuoteMeta(end)))
	return strings.TrimSpace(strings.ReplaceAll(m[1], "\r", ""))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
