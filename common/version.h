#ifndef FOGMESH_COMMON_VERSION_H
#define FOGMESH_COMMON_VERSION_H

#ifndef FOGMESH_VERSION
#define FOGMESH_VERSION "0.0.0-dev"
#endif

/* The API version prefix shared by meshd and meshctl. */
#define FOGMESH_API_PREFIX "/v1"

#endif
