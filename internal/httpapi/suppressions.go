package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mailrelay/mailrelay/internal/suppress"
)

// Suppressions is the suppression list the admin endpoints manage.
type Suppressions interface {
	List(ctx context.Context) ([]suppress.Entry, error)
	Add(ctx context.Context, e suppress.Entry) error
	Remove(ctx context.Context, address string) error
}

// suppressionRoutes serves GET and POST /v1/suppressions and
// DELETE /v1/suppressions/<address> (contract §9.6), behind the token.
func (c Config) suppressionRoutes(mux *http.ServeMux) {
	store := func(w http.ResponseWriter) Suppressions {
		if c.Suppressions != nil {
			if s := c.Suppressions(); s != nil {
				return s
			}
		}
		jsonError(w, http.StatusServiceUnavailable, "the suppression list is not available yet: the relay is not ready")
		return nil
	}
	mux.HandleFunc("GET /v1/suppressions", c.admin(func(w http.ResponseWriter, r *http.Request) {
		s := store(w)
		if s == nil {
			return
		}
		list, err := s.List(r.Context())
		if err != nil {
			jsonError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		if list == nil {
			list = []suppress.Entry{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"suppressions": list})
	}))
	mux.HandleFunc("POST /v1/suppressions", c.admin(func(w http.ResponseWriter, r *http.Request) {
		s := store(w)
		if s == nil {
			return
		}
		var req struct {
			Address string `json:"address"`
			Reason  string `json:"reason"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			jsonError(w, http.StatusBadRequest, `the body must be {"address": "...", "reason": "..."}`)
			return
		}
		if err := suppress.CheckAddress(req.Address); err != nil {
			jsonError(w, http.StatusBadRequest, err.Error())
			return
		}
		if strings.TrimSpace(req.Reason) == "" {
			req.Reason = "added by an operator"
		}
		e := suppress.Entry{Address: strings.TrimSpace(req.Address), Reason: req.Reason, Source: suppress.SourceOperator,
			At: time.Now().UTC()}
		if err := s.Add(r.Context(), e); err != nil {
			jsonError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, e)
	}))
	mux.HandleFunc("DELETE /v1/suppressions/{address}", c.admin(func(w http.ResponseWriter, r *http.Request) {
		s := store(w)
		if s == nil {
			return
		}
		address := r.PathValue("address")
		switch err := s.Remove(r.Context(), address); {
		case errors.Is(err, suppress.ErrNotFound):
			jsonError(w, http.StatusNotFound, "that address is not suppressed")
		case err != nil:
			jsonError(w, http.StatusServiceUnavailable, err.Error())
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
}
