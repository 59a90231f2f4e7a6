package fleet

import (
	"database/sql"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// openDB opens the hub's SQLite database beside the running hub, to check
// its books.
func openDB(path string) (*sql.DB, error) {
	return sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
}
