#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void *device_alloc(size_t size, const struct device_type *t, const char *name)
{
	struct device *d = calloc(1, size < sizeof(*d) ? sizeof(*d) : size);
	if (!d) {
		vmm_fail("%s: out of memory", name);
		return NULL;
	}
	d->type = t;
	snprintf(d->name, sizeof(d->name), "%s", name);
	return d;
}

uint32_t dev_field_number(const struct dev_field *f, const void *config)
{
	const char *p = (const char *)config + f->offset;
	if (f->kind == DEV_U16) {
		uint16_t v;
		memcpy(&v, p, sizeof(v));
		return v;
	}
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

int dev_mac_parse(const char *s, uint8_t mac[6])
{
	unsigned b[6];
	char end;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &end) != 6 ||
	    strlen(s) != 17)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

void dev_mac_format(const uint8_t mac[6], char out[18])
{
	snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

static int check_number(const char *where, const struct dev_field *f, uint32_t v)
{
	if (v < f->min || v > f->max)
		return vmm_fail("%s: %s %u (must be %u..%u)", where, f->name, v, f->min, f->max);
	if (f->power_of_2 && (v & (v - 1)))
		return vmm_fail("%s: %s %u (must be a power of 2 from %u to %u)", where, f->name, v, f->min,
				f->max);
	return 0;
}

int dev_fields_check(const struct dev_field *fields, const void *config, const char *where)
{
	for (const struct dev_field *f = fields; f && f->name; f++) {
		const char *p = (const char *)config + f->offset;
		bool present = true;
		switch (f->kind) {
		case DEV_STRING: {
			size_t n = strnlen(p, f->size);
			if (n == f->size)
				return vmm_fail("%s: %s is not terminated", where, f->name);
			present = n > 0;
			if (present && (n < f->min || (f->max && n > f->max)))
				return vmm_fail("%s: %s \"%s\" is %zu bytes (must be %u..%u)", where, f->name, p, n,
						f->min, f->max);
			break;
		}
		case DEV_U32:
		case DEV_U16: {
			uint32_t v = dev_field_number(f, config);
			present = v != 0;
			if ((present || !f->optional) && check_number(where, f, v))
				return -1;
			break;
		}
		case DEV_FLAG:
		case DEV_MAC:
			break;
		}
		if (!present && !f->optional)
			return vmm_fail("%s: %s is missing", where, f->name);
		if (present && f->check && f->check(where, f, p))
			return -1;
	}
	return 0;
}

const struct dev_field *device_backend_field(const struct device_type *t)
{
	for (const struct dev_field *f = t->fields; f && f->name; f++)
		if (f->backend)
			return f;
	return NULL;
}

const char *device_backend_name(const struct device_type *t, const void *config)
{
	const struct dev_field *f = device_backend_field(t);
	const char *name = f && config ? (const char *)config + f->offset : NULL;
	return name && *name ? name : NULL;
}

bool device_same_backend(const struct device_type *t, const void *config, const struct device_type *other,
			 const void *other_config)
{
	const char *a = device_backend_name(t, config);
	const char *b = other == t ? device_backend_name(other, other_config) : NULL;
	return a && b && !strcmp(a, b);
}

const struct device_type *device_registry_find(const struct device_registry *r, const char *kind)
{
	for (const struct device_type *const *t = r->types; *t; t++)
		if (!strcmp((*t)->kind, kind))
			return *t;
	for (const struct device_type *const *t = r->board_types; *t; t++)
		if (!strcmp((*t)->kind, kind))
			return *t;
	return NULL;
}

bool device_registry_addable(const struct device_registry *r, const struct device_type *t)
{
	for (const struct device_type *const *p = r->types; *p; p++)
		if (*p == t)
			return true;
	return false;
}
