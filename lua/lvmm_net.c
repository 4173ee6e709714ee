/* vmm.net: host network management through netlink (placeholder until the
 * binding lands; registers nothing yet). */
#include "lvmm.h"

void lvmm_net_register(lua_State *L)
{
	(void)L;
}
