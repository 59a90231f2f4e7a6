// Package images holds what goes onto a kiosk or a hub server besides the
// Go binaries: the trees of the frank-kiosk and frank-hub Debian packages
// (systemd units, default configs, udev rules, the touchscreen autostart,
// the mosquitto snippet, maintainer scripts) and images/build, which makes
// the packages. Its tests build the packages, check what is in them, and
// install one version after another into a Debian test root.
package images
