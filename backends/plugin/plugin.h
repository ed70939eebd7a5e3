/*
 * backends/plugin/plugin.h: the plugin backend (user models as shared objects, kiln_plugin.h).
 * Internal to backends/: the rest of Kiln finds it through kiln_backend_find("plugin").
 */
#ifndef KILN_BACKENDS_PLUGIN_PLUGIN_H
#define KILN_BACKENDS_PLUGIN_PLUGIN_H

#include "backends/backend.h"

extern const kiln_backend kiln_plugin_backend;

#endif /* KILN_BACKENDS_PLUGIN_PLUGIN_H */
