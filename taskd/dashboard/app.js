// @ts-check
// The dashboard's entry module: it checks the token the tab kept, then shows the view in the hash
// or the sign-in form. The page's parts are in the modules this one imports.

import { accepted } from "./api.js";
import { enter, route, signingIn, signOut } from "./router.js";

window.addEventListener("hashchange", () => {
  if (!signingIn()) route();
});

let ok = true;
try {
  ok = await accepted();
} catch {
  // The daemon is not answering: the view says so when it tries.
}
if (ok) enter();
else signOut();
