/* Application specs: validation and canonical form (work in progress). */
#ifndef FOGMESH_CONSENSUS_SPEC_H
#define FOGMESH_CONSENSUS_SPEC_H
#endif
