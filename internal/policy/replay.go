package policy

import "iter"

// Change is a recorded decision that a candidate set decides differently.
type Change struct {
	Request   Request  `json:"request"`
	Recorded  Decision `json:"recorded"`
	Candidate Decision `json:"candidate"`
}

// Replay decides each recorded request again under candidate and returns
// the ones whose decision would change (see Differs), in order. It is the
// core of `gatehouse policy replay`: the caller reads the records from the
// audit store and prints the changes.
func Replay(candidate *Set, recorded iter.Seq2[Request, Decision]) []Change {
	var out []Change
	for req, was := range recorded {
		if now := candidate.Decide(req); Differs(was, now) {
			out = append(out, Change{Request: req, Recorded: was, Candidate: now})
		}
	}
	return out
}
