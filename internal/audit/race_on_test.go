//go:build race

package audit

// raceEnabled reports whether the race detector is on: its instrumentation
// allocates, so allocation counts are meaningless under it.
const raceEnabled = true
