// @ts-check
// The dashboard's entry module: it checks the token the tab kept, then shows the view in the hash
// or the sign-in form. The page's parts are in the modules this one imports.

import { accepted } from "./api.js";
import { byId } from "./dom.js";
import { zonePicker } from "./header.js";
import { enter, route, signingIn, signOff, signOut } from "./router.js";
import { refreshRelative } from "./times.js";

/** How often relative times ("in 4 min") are brought up to date. */
const RELATIVE_EVERY = 15e3;

window.addEventListener("hashchange", () => {
  if (!signingIn()) route();
});
zonePicker(() => {
  if (!signingIn()) route();
});
byId("sign-out").addEventListener("click", signOff);
setInterval(refreshRelative, RELATIVE_EVERY);

let ok = true;
try {
  ok = await accepted();
} catch {
  // The daemon is not answering: the view says so when it tries.
}
if (ok) enter();
else signOut();
