// Package e2e runs whole Frank systems from the real binaries and checks
// what comes out of the printer the way a postal inspector would. It holds
// only tests.
package e2e
