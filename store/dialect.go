package store

import "database/sql"

// dialect is what MySQL and SQLite write differently. Every statement of the package is
// one text for both but for these pieces, which each statement takes from its store's
// dialect (mysql.go, sqlite.go).
type dialect struct {
	// insertIgnore starts an INSERT that skips rows whose key is there already.
	insertIgnore string
	// onConflictUpdate follows an INSERT's VALUES and precedes the assignments that update
	// the row whose key is there already. The assignments bind the new values again
	// (MySQL 8 deprecates VALUES(col), which MariaDB still needs).
	onConflictUpdate string
	// forUpdate ends a SELECT whose rows stay locked until the transaction ends.
	forUpdate string
	// skipLocked ends a SELECT that locks its rows and passes over those another
	// transaction has locked.
	skipLocked string
	// keepPhone ends the SET clause of an UPDATE of users rows so that the statement's
	// last insert id is the phone of the row it wrote, where the dialect has no RETURNING
	// (MariaDB's UPDATE has none): MySQL returns the value of LAST_INSERT_ID(expr) so.
	keepPhone string
	// returningPhone ends an UPDATE of one users row that answers the phone of the row it
	// wrote, where the dialect has RETURNING.
	returningPhone string
	// readCommitted are the options of the transactions that want READ COMMITTED (fewer
	// gap locks); nil where there are no isolation levels to choose.
	readCommitted *sql.TxOptions
}
