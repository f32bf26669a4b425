/* imageref.h — the image-reference grammar of the API (Docker's
 * reference grammar, as /build's t= and BuildKit's image exporter name
 * an image): validation of a reference used as a tag, and Podman
 * compat's normalisation. */
#ifndef SCHEMA_IMAGEREF_H
#define SCHEMA_IMAGEREF_H

#include "common/ps.h"

/* Validate an image reference used as a tag (Docker's grammar: lowercase
 * repository, optional registry host[:port], optional :tag, no digest).
 * 400 with Docker's message on failure. */
int schema_imageref_check_tag (const char *tag, ps_error **err);

/* Podman compat's normalisation: "x" -> "docker.io/library/x:latest". */
char *schema_imageref_normalize_compat (const char *tag);

/* Docker Engine trusts registries on the loopback interface over plain
 * HTTP without being told (its default insecure CIDRs are 127.0.0.0/8 and
 * ::1/128, and "localhost" resolves there).  True when the registry host of
 * `ref` (a reference, "host[:port]/repo...", or a bare "host[:port]",
 * optionally after "docker://") is localhost, 127.x.y.z or ::1. */
bool schema_imageref_loopback_registry (const char *ref);

#endif
