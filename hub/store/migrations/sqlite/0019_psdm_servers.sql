-- Schema v19: the PSDM servers (patent Fig. 7), a stored list ops add to
-- and drain while hubs run. Each hub runs the active servers listed under
-- its name; a server checks out 1 to 8 MPSDs.
CREATE TABLE psdm_servers (
  hub        TEXT    NOT NULL,
  id         INTEGER NOT NULL,
  mpsds      INTEGER NOT NULL CHECK (mpsds BETWEEN 1 AND 8),
  state      TEXT    NOT NULL CHECK (state IN ('active', 'drained')),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (hub, id)
);
