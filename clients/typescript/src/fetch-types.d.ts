// @connectrpc/connect's declarations name the fetch API's `HeadersInit`, which TypeScript only
// has in its DOM library; @types/node declares `Headers` (Node's fetch) but not this alias.
// Declaring it here keeps browser globals (window, document, ...) out of a Node program.
type HeadersInit = NonNullable<ConstructorParameters<typeof Headers>[0]>;
