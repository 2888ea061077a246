package semantic

// SetFault makes built-in detector d fail on every Screen: fault runs
// before the detector and either panics or returns an error. It exists for
// tests of the fail modes and must be called before e is used.
func SetFault(e *Engine, d Detector, fault func() error) {
	if e.faults == nil {
		e.faults = map[Detector]func() error{}
	}
	e.faults[d] = fault
}
