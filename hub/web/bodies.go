package web

import (
	"errors"
	"mime"
	"net/http"
	"strings"
)

// MaxBodyBytes is the most any request may send as its body: the largest
// protocol message (protocol.MaxMessageBytes), which the JSON and XML APIs
// read at most, and far more than any form of the portal or console. No
// route takes an upload: releases and label stock are published with the
// hub command, and release downloads send nothing.
const MaxBodyBytes = 64 << 10

// MaxHeaderBytes is the most a request's header may take (Go's default is
// 1 MB): cookies, a bearer token and a browser's headers take a few KB.
const MaxHeaderBytes = 64 << 10

// limitBody holds every request's body to MaxBodyBytes, so that nothing
// reads more, whoever sent it and before any login.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// forms guards the portal's and the console's pages, whose forms are all
// urlencoded. A multipart body is refused (415): Go would keep its values
// in memory and spill its files to disk, and under a router that passes a
// copy of the request down, never remove them. A form is read here, within
// MaxBodyBytes (413 past it), before any handler, login or CSRF check.
func forms(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); strings.HasPrefix(mt, "multipart/") {
			http.Error(w, "send the form as application/x-www-form-urlencoded, as our pages do", http.StatusUnsupportedMediaType)
			return
		}
		if err := r.ParseForm(); err != nil {
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
				http.Error(w, "the form is too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "the form could not be read", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
