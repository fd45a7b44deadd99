package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/keyshard/keyshard/engine"
)

// WriteJSON encodes v before it writes the status, so that a value that
// cannot be encoded is a 500 with a JSON body rather than a 200 with none.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := EncodeJSON(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"code":"unexpected_failure","message":"internal error"}` + "\n")
	}
	WriteEncodedJSON(w, status, b)
}

// EncodeJSON returns v as a JSON body, ending in a newline as WriteJSON
// writes it.
func EncodeJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode answer: %w", err)
	}
	return append(b, '\n'), nil
}

// WriteEncodedJSON answers status with body b, made by EncodeJSON.
func WriteEncodedJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// badJSON is a request body that is not the one JSON value expected.
func badJSON(msg string) error { return engine.NewError(engine.KindInvalid, "bad_json", msg) }

// bodyError returns err when it is a body over its limit or one that did
// not arrive in time (ProblemOf answers them 413 and 408), else nil.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || errors.Is(err, errBodyTimeout) {
		return err
	}
	return nil
}

// DecodeJSON reads a JSON object body into v, refusing unknown trailing
// data. A body over the route's limit, or one that did not arrive in time,
// returns the read's error (ProblemOf makes them 413 and 408).
func DecodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		if berr := bodyError(err); berr != nil {
			return berr
		}
		if errors.Is(err, io.EOF) {
			return badJSON("request body is empty")
		}
		return badJSON("request body is not valid JSON: " + err.Error())
	}
	if dec.More() {
		return badJSON("request body has data after the JSON value")
	}
	// More is false also when reading on failed: a valid value followed by
	// more than the limit of white space must still answer 413.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		if berr := bodyError(err); berr != nil {
			return berr
		}
		return badJSON("request body could not be read")
	}
	return nil
}
