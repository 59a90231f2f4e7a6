// Package cards is the testbench, which may import anything.
package cards
