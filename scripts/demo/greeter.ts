// The demo's plugin: published as TypeScript source through the management API.
import { definePlugin } from '@isomesh/sdk';

export default definePlugin<{ greeting: string }>({
  onRequest(req, ctx) {
    if (req.path.startsWith('/admin')) {
      return ctx.respond(403, { body: `blocked by the greeter plugin of tenant ${ctx.tenant}\n` });
    }
    req.headers.set('x-greeting', `${ctx.config.greeting} (tenant ${ctx.tenant})`);
  },
  onResponse(res) {
    res.headers.set('x-isomesh-plugin', 'greeter');
  },
});
